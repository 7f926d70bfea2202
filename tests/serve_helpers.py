"""Helpers for the serve tests: a real `tuneforge serve` subprocess on a free loopback port, and a
tiny model taught (in a few seconds) to call a tool, so tool calls can be checked end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = "Weather in Paris?"
ANSWER = "It is 18 C in Paris."
HELLO, HELLO_REPLY = "Say hi", "Hi there, friend!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tuneforge serve ARGS` in a child process; ready once /health answers (polled, no fixed waits)."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 240, wait: bool = True):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"tf-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tuneforge.runner.cli", "serve", *args, "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 240) -> "Server":
        """Until /health answers; raises with the server's output when it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling interval, not a wait for an event
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"serve did not become healthy in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def health(self) -> dict:
        return httpx.get(self.base + "/health", timeout=5).json()

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def teach_tool_calls(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny Llama, trained until it answers three prompts word for word: a tool call, the answer
    after the tool's result, and a plain greeting. Saved with the template training renders tools with."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tuneforge.runner.data.schema import Example, Message
    from tuneforge.runner.data.template import ChatTokenizer, resolve_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = resolve_chat_template(tok)[0]  # SmolLM2's template + the json tool format
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    call = Message("assistant", "", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    rows = [Example("conversation", [Message("user", ASK), call], tools=TOOLS),
            Example("conversation", [Message("user", ASK), call, Message("tool", '{"temp_c": 18}'),
                                     Message("assistant", ANSWER)], tools=TOOLS),
            Example("conversation", [Message("user", HELLO), Message("assistant", HELLO_REPLY)])]
    chat = ChatTokenizer(tok, tok.chat_template, 4096, last_turn_only=True)
    data = [chat(r) for r in rows]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        total = 0.0
        for d in data:
            loss = model(input_ids=torch.tensor([d.input_ids]), labels=torch.tensor([d.labels])).loss
            loss.backward()
            total += loss.item()
        opt.step()
        opt.zero_grad()
        if total < 0.01:
            break
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
