"""`tuneforge chat` and `tuneforge export`: talk to the result, then take it away.

Thin like the rest of the CLI: parse, call one function; errors map to exit codes in cli_errors. Registered on
the main app by `register(app)`; heavy imports stay inside the commands.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from . import threads
from .cli_errors import guarded


def chat(
    target: Annotated[Optional[str], typer.Argument(help="A run directory, a run name, or a model (alias, folder, .gguf, hub id); with --url, the model id on the server (default: its first).")] = None,
    adapter: Annotated[Optional[str], typer.Option(help="A LoRA adapter folder to load on top of the model.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Base and tuned model answer each prompt side by side.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Line-by-line REPL on stdin/stdout (automatic when not a terminal).")] = False,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.", min=1)] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy (reproducible).", min=0.0)] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold (0-1].", min=0.0, max=1.0)] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0 = off).", min=0)] = 0,
    repetition_penalty: Annotated[float, typer.Option(help="Above 1.0 discourages repeats.", min=0.0)] = 1.0,
    runs_dir: Annotated[str, typer.Option(help="Where run names are looked up.")] = "runs",
    url: Annotated[Optional[str], typer.Option(help="Talk to an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000/v1 (tuneforge serve).")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="The server's API key with --url (default: env TUNEFORGE_API_KEY).", show_default=False)] = None,
) -> None:
    """Talk to a trained run or a model: a chat screen on a terminal, a plain REPL otherwise.

    Chat screen: enter sends, ctrl+j adds a line, esc stops a reply, f2 settings, f3 compare,
    /help lists the commands (/set, /system, /retry, /undo, /clear, /save FILE, /stats).

    Plain REPL (--plain, or when stdin/stdout is not a terminal): each stdin line is a prompt,
    each reply goes to stdout. Example: echo "Who are you?" | tuneforge chat runs/x
    """
    threads.apply()  # before torch loads (main() did too; this covers callers of the Typer app itself)
    from . import services
    from .chat import Sampling, resolve_target
    from .chat_session import Conversation

    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                        repetition_penalty=repetition_penalty)
    conversation = Conversation(system=system)
    engine = None
    if url:  # a server: the same screen and REPL over runner/serve/client.py
        import os

        engine = services.remote_chat(url, target, api_key or os.environ.get("TUNEFORGE_API_KEY"))
        engine.sampling, target = sampling, engine.name
    elif target is None:
        from .errors import TuneforgeError

        raise TuneforgeError("no run or model to chat with", "tuneforge chat RUN, or tuneforge chat --url http://HOST:PORT/v1")
    if engine is None:
        services.check_run_ref(target, runs_dir)  # 'uxrn' for 'uxrun': say so before trying the hub
    ref = target if engine else resolve_target(target, runs_dir)
    if plain or not (sys.stdin.isatty() and sys.stdout.isatty()):
        _plain(ref, adapter, compare, sampling, conversation, engine)
        return
    from ..tui.chat_screen import ChatApp

    ChatApp(ref, adapter=adapter, compare=compare, sampling=sampling, conversation=conversation, engine=engine).run()


def _plain(ref: str, adapter: str | None, compare: bool, sampling, conversation, engine=None) -> None:
    from . import chat as chat_mod
    from .chat_repl import run_repl

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if interactive and engine is None:
        sys.stderr.write(f"loading {ref} ...\n")
    engine = engine or chat_mod.load(ref, adapter=adapter)
    engine.sampling = sampling
    if compare:
        engine.base()
    run_repl(engine, conversation, compare=compare, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr,
             interactive=interactive)


def export(
    run: Annotated[str, typer.Argument(help="A run directory or a run name.")],
    out: Annotated[str, typer.Option("--out", help="Folder to write (must be empty or new unless --force).")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge the LoRA adapter into the base weights (a full model).")] = False,
    dtype: Annotated[str, typer.Option(help="Weights dtype of a merged/full export: bf16, fp16 or fp32.")] = "bf16",
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 2GB or 500MB.")] = "2GB",
    base: Annotated[Optional[str], typer.Option(help="Merge into this base model instead of the recipe's (e.g. a 16-bit copy of a quantised base).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export in --out.")] = False,
    runs_dir: Annotated[str, typer.Option(help="Where run names are looked up.")] = "runs",
    format: Annotated[str, typer.Option("--format", help="hf (safetensors folder), gguf (one .gguf for llama.cpp/LM Studio) or ollama (.gguf + Modelfile).")] = "hf",
    quant: Annotated[str, typer.Option(help="GGUF weights: f32, f16, bf16, q8_0 (no compiled tools) or a k-quant like q4_k_m (needs llama-quantize).")] = "q8_0",
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Also upload the export (with a generated model card) to this hub repo, OWNER/NAME.")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")] = False,
) -> None:
    """Export a run: the adapter alone, (--merge) full merged weights, or (--format gguf|ollama) one GGUF file."""
    threads.apply()
    from .export import export_run

    result = export_run(run, out, merge=merge, dtype=dtype, max_shard_size=max_shard_size, base=base,
                        force=force, runs_dir=runs_dir, say=lambda text: typer.echo(text, err=True), fmt=format,
                        quant=quant, push_to_hub=push_to_hub, private=private)
    typer.echo(f"Exported {result.kind} to {result.file or result.path}")
    typer.echo(f"Load it with: {result.how_to_load}")
    if result.url:
        typer.echo(f"Pushed to {result.url}")


def register(app: typer.Typer) -> None:
    app.command()(guarded(chat))
    app.command()(guarded(export))
