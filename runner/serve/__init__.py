"""`tuneforge serve`: runs (or models) behind an OpenAI-compatible API, safe by default.

models.py  what is served: targets by name, their tokenizers with the run's template
loader.py  how a target loads in its model process (transformers' ModelLoader, for runs)
generate.py one request's generation: stop strings, reasoning, tool calls in the run's format
wire.py    OpenAI's wire format: field checks, errors, objects and chunks
app.py     the FastAPI app: routes, API key, size and concurrency limits
client.py  a chat engine that talks to any OpenAI-compatible server (`tuneforge chat --url`)
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Callable

from ..errors import TuneforgeError
from .app import Limits

__all__ = ["Limits", "ServeOptions", "check_host", "run", "tunnel_hint"]


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    batching: bool = True  # continuous batching with paged attention (transformers); off: one generate at a time
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key."""
    if not is_loopback(host) and not api_key:
        raise TuneforgeError(f"--host {host} would let anyone who reaches this machine use the model, and no API key is set",
                             "set --api-key KEY (or TUNEFORGE_API_KEY), or keep --host 127.0.0.1 and use an SSH tunnel")


def tunnel_hint(port: int) -> str:
    """The command that reaches this server from a laptop."""
    user = os.environ.get("USER") or "you"
    return f"ssh -N -L {port}:127.0.0.1:{port} {user}@{socket.gethostname()}"


def _check_installed() -> None:
    missing = []
    for mod in ("fastapi", "uvicorn", "openai"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise TuneforgeError(f"serving needs {', '.join(missing)}, which are not installed",
                             "pip install 'tuneforge[serve]'")


def run(refs: list[str], opts: ServeOptions, runs_dir: str = "runs", say: Callable[[str], None] = print) -> None:
    """Load every target (one model process each), then serve until SIGINT/SIGTERM."""
    check_host(opts.host, opts.api_key)
    _check_installed()
    from transformers.cli.serving.model_manager import EngineClient, ModelManager
    from transformers.cli.serving.utils import GenerationState

    from .. import model as model_mod
    from .app import build_app
    from .loader import RunLoader
    from .models import key_of, load_tokenizer, targets

    model_mod.quiet_hf()
    served = targets(refs, runs_dir)
    loader = RunLoader(served, opts.device)
    state = GenerationState(continuous_batching=opts.batching, max_model_len=opts.limits.max_model_len)
    manager = ModelManager(loader=loader, generation_state=state, model_timeout=-1)
    try:
        for t in served:
            say(f"loading {t.id} ({t.ref}) ...")
            engine = EngineClient(key_of(t), loader, state, timeout=-1)
            manager.engines[key_of(t)] = engine
            engine.start()
        tokenizers = {t.id: load_tokenizer(t) for t in served}
        app = build_app(manager, served, tokenizers, opts.limits, opts.api_key)
        _serve(app, opts, served, say)
    finally:
        manager.shutdown()


def _serve(app, opts: ServeOptions, served, say) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=opts.host, port=opts.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    base = f"http://{opts.host if ':' not in opts.host else f'[{opts.host}]'}:{opts.port}/v1"
    say(f"serving {', '.join(t.id for t in served)} at {base}"
        + (" (API key required)" if opts.api_key else " (no API key: loopback only)"))
    if is_loopback(opts.host):
        say(f"from your laptop: {tunnel_hint(opts.port)}   then use http://127.0.0.1:{opts.port}/v1")
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal: SIGINT ends as KeyboardInterrupt
    # (exit 130 through cli_errors), SIGTERM as exit 143 like other tuneforge commands, after the cleanup in run().
    signal.signal(signal.SIGTERM, _exit_143)
    server.run()


def _exit_143(_signum, _frame) -> None:
    raise SystemExit(143)
