"""The plain REPL: prompts from stdin, replies streamed to stdout; for scripts, pipes and dumb terminals.

stdout carries only the replies (one per prompt, each ending in a newline), so
`echo "Who are you?" | tuneforge chat runs/x --plain > answer.txt` captures just the answer.
Slash commands (/set, /save, /stats, ...) work too; what they print goes to stderr.
"""

from __future__ import annotations

import threading
from typing import TextIO

from .chat import ChatModel
from .chat_session import BASE, TUNED, Conversation, help_text, parse_command, parse_settings
from .errors import TuneforgeError


def run_repl(engine: ChatModel, conversation: Conversation, *, compare: bool, stdin: TextIO, stdout: TextIO,
             stderr: TextIO, interactive: bool) -> None:
    def note(text: str) -> None:
        stderr.write(text + "\n")
        stderr.flush()

    def answer(turn_index: int) -> None:
        turn = conversation.turns[turn_index]
        for variant in ((TUNED, BASE) if compare else (TUNED,)):
            model = engine if variant == TUNED else engine.base()
            if compare:
                stdout.write(f"[{variant}] ")
            elif interactive:
                stdout.write("bot> ")
            stdout.flush()
            parts: list[str] = []
            stop = threading.Event()
            try:
                for piece in model.stream(conversation.messages(variant, upto=turn_index), engine.sampling, stop):
                    parts.append(piece)
                    stdout.write(piece)
                    stdout.flush()
            except KeyboardInterrupt:  # ctrl+c stops this reply, keeps what came so far
                stop.set()
                turn.stopped.add(variant)
            stdout.write("\n")
            stdout.flush()
            turn.replies[variant] = "".join(parts)

    if interactive:
        note(f"Chatting with {engine.name}. /help for commands; empty line or ctrl+d to quit.")
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            if interactive:
                break
            continue
        cmd = parse_command(line)
        try:
            if cmd is None:
                conversation.add(line)
                answer(len(conversation.turns) - 1)
                continue
            if cmd.name == "/help":
                note(help_text())
            elif cmd.name == "/clear":
                conversation.clear()
                note("conversation cleared")
            elif cmd.name == "/undo":
                note(f"removed: {conversation.undo().user}")
            elif cmd.name == "/retry":
                if not conversation.turns:
                    raise TuneforgeError("nothing to retry", "type a prompt first")
                conversation.turns[-1].replies.clear()
                conversation.turns[-1].stopped.clear()
                answer(len(conversation.turns) - 1)
            elif cmd.name == "/system":
                if cmd.arg:
                    conversation.system = None if cmd.arg.lower() == "none" else cmd.arg
                note(f"system prompt: {conversation.system or '(none)'}")
            elif cmd.name == "/set":
                for name, value in parse_settings(cmd.arg):
                    engine.sampling.set(name, value)
                note(engine.sampling.describe())
            elif cmd.name == "/save":
                path, _, which = cmd.arg.partition(" ")
                if not path:
                    raise TuneforgeError("/save needs a file name", "e.g. /save chats.jsonl")
                saved = conversation.save(path, BASE if which.strip() == BASE else TUNED)
                note(f"saved to {saved}")
            elif cmd.name == "/stats":
                for label, m in ((engine.name, engine), (BASE, engine._base)):
                    if m is not None and m.last_stats is not None:
                        note(f"{label}: {m.last_stats.describe()}")
            elif cmd.name == "/compare":
                if not compare:
                    engine.base()  # fails clearly when there is nothing to compare with
                compare = not compare
                note(f"compare mode {'on' if compare else 'off'}")
        except TuneforgeError as exc:
            note(f"error: {exc.message}" + (f"\nfix: {exc.fix}" if exc.fix else ""))
