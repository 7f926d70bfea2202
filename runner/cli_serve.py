"""`tuneforge serve`: runs behind an OpenAI-compatible API (runner/serve/). Thin: parse, call one function."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from .cli_errors import guarded


def serve(
    targets: Annotated[list[str], typer.Argument(help="Runs (directories or names) or models to serve; the model id is the run name.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    api_key: Annotated[Optional[str], typer.Option(help="Clients must send 'Authorization: Bearer KEY' (default: env TUNEFORGE_API_KEY).", show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="transformers (continuous batching) or vllm (CUDA, vLLM installed, a merged export).")] = "transformers",
    batching: Annotated[bool, typer.Option("--batching/--no-batching", help="Continuous batching (concurrent requests share the model); off: one at a time.")] = True,
    max_concurrent: Annotated[int, typer.Option(help="Requests generating at once; more get HTTP 429.", min=1)] = 64,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body; larger gets HTTP 413.", min=1024)] = 1_000_000,
    max_model_len: Annotated[Optional[int], typer.Option(help="Longest prompt + reply in tokens (default: the model's context).", min=16)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    runs_dir: Annotated[str, typer.Option(help="Where run names are looked up.")] = "runs",
) -> None:
    """Serve runs with OpenAI's API: /v1/chat/completions, /v1/completions, /v1/models, /health.

    Listens on 127.0.0.1 by default; from a laptop, use the SSH tunnel it prints. Example:
    tuneforge serve runs/quickstart, then
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"model": "quickstart", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    from . import services
    from .errors import TuneforgeError
    from .serve import Limits, ServeOptions

    key = api_key or os.environ.get("TUNEFORGE_API_KEY") or None
    if engine == "vllm":
        _vllm_refusal()
    elif engine != "transformers":
        raise TuneforgeError(f"unknown engine '{engine}'", "use --engine transformers or --engine vllm")
    opts = ServeOptions(host=host, port=port, api_key=key, batching=batching, device=device,
                        limits=Limits(max_body_bytes=max_body_bytes, max_concurrent=max_concurrent,
                                      max_model_len=max_model_len))
    services.serve(targets, opts, runs_dir, say=lambda text: typer.echo(text, err=True))


def _vllm_refusal() -> None:
    """vLLM runs only on CUDA with vllm installed; say exactly what is missing."""
    import importlib.util

    from .errors import TuneforgeError

    if importlib.util.find_spec("vllm") is None:
        raise TuneforgeError("--engine vllm needs the vllm package, which is not installed",
                             "pip install vllm on a CUDA machine, or use --engine transformers (the default)")
    raise TuneforgeError("--engine vllm is not wired up in this version",
                         "export the run merged (tuneforge export RUN --merge --out DIR) and run: vllm serve DIR")
