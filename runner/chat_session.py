"""A conversation and its slash commands, shared by the chat screen and the plain REPL.

No model in here: the conversation keeps the turns (one user prompt, one reply per model in
compare mode), builds the messages each model sees, and saves itself as an OpenAI-messages
JSONL row that `tuneforge train` reads back (data format 'openai').
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TuneforgeError

TUNED, BASE = "tuned", "base"

COMMANDS = {
    "/retry": "answer the last prompt again",
    "/undo": "remove the last prompt and its reply (the prompt goes back into the input)",
    "/clear": "start a new conversation (the system prompt stays)",
    "/system": "/system TEXT sets the system prompt, /system none removes it, /system shows it",
    "/set": "/set temperature=0.7 top_p=0.9 ... changes sampling; /set alone shows the settings",
    "/save": "/save FILE [base] appends the conversation as a JSONL row you can train on",
    "/stats": "time to first token and tokens/s of the last reply",
    "/compare": "switch compare mode (base and tuned answer side by side) on or off",
    "/help": "this list",
}


@dataclass
class Turn:
    user: str
    replies: dict[str, str] = field(default_factory=dict)  # variant ("tuned" | "base") -> reply text
    stopped: set[str] = field(default_factory=set)  # variants whose reply was cut short


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def messages(self, variant: str = TUNED, upto: int | None = None) -> list[dict]:
        """OpenAI-style messages for one model: system, then user/assistant turns.

        `upto` (a turn index) gives the prompt for that turn: every earlier turn plus its user text.
        """
        out = [{"role": "system", "content": self.system}] if self.system else []
        turns = self.turns if upto is None else self.turns[: upto + 1]
        for i, turn in enumerate(turns):
            out.append({"role": "user", "content": turn.user})
            reply = turn.replies.get(variant)
            if reply is not None and (upto is None or i < upto):
                out.append({"role": "assistant", "content": reply})
        return out

    def add(self, prompt: str) -> Turn:
        turn = Turn(prompt)
        self.turns.append(turn)
        return turn

    def undo(self) -> Turn:
        if not self.turns:
            raise TuneforgeError("nothing to undo", "type a prompt first")
        return self.turns.pop()

    def clear(self) -> None:
        self.turns.clear()

    def to_row(self, variant: str = TUNED) -> dict:
        """One training row in the OpenAI messages format (complete exchanges only)."""
        msgs = [m for m in self.messages(variant)]
        while msgs and msgs[-1]["role"] != "assistant":
            msgs.pop()  # a prompt still waiting for its answer is not a training example
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            raise TuneforgeError("nothing to save yet: the conversation has no answered prompt",
                                 "send a prompt and wait for the reply, then /save FILE")
        return {"messages": msgs}

    def save(self, path: str | Path, variant: str = TUNED) -> Path:
        """Append the conversation to a JSONL file (created with its folder if missing)."""
        row = self.to_row(variant)
        p = Path(path).expanduser()
        if p.suffix != ".jsonl":
            raise TuneforgeError(f"'{path}' does not end in .jsonl", "save to a .jsonl file, e.g. /save chats.jsonl")
        if p.is_dir():
            raise TuneforgeError(f"'{path}' is a folder", "give a file name, e.g. /save chats.jsonl")
        p.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = p.is_file() and p.stat().st_size > 0 and not p.read_bytes().endswith(b"\n")
        with open(p, "a", encoding="utf-8") as f:
            f.write(("\n" if needs_newline else "") + json.dumps(row, ensure_ascii=False) + "\n")
        return p


@dataclass
class Command:
    name: str  # "/retry", ...
    arg: str  # the rest of the line, stripped


def parse_command(line: str) -> Command | None:
    """A known slash command, or None (so a prompt like '/etc/hosts?' is still a prompt)."""
    text = line.strip()
    if not text.startswith("/"):
        return None
    name, _, arg = text.partition(" ")
    if name.lower() not in COMMANDS:
        return None
    return Command(name.lower(), arg.strip())


def parse_settings(arg: str) -> list[tuple[str, str]]:
    """'temperature=0.7 top_p 0.9' -> [('temperature', '0.7'), ('top_p', '0.9')]."""
    tokens = arg.replace("=", " ").split()
    if len(tokens) % 2:
        raise TuneforgeError(f"'/set {arg}' needs name=value pairs", "e.g. /set temperature=0.7 max_new_tokens=128")
    return [(tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2)]


def help_text() -> str:
    return "\n".join(f"{name:<9} {what}" for name, what in COMMANDS.items())
