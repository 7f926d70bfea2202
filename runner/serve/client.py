"""A chat engine that talks to any OpenAI-compatible server (`tuneforge chat --url URL`).

It has the interface of the local engine (`chat.ChatModel`: `stream`, `reply`, `sampling`,
`last_stats`, `base`), so the chat screen and the plain REPL use it unchanged. Tool calls the server
returns are shown as text lines (`→ tool call name({...})`), and the prompt typed after such a reply
is sent as the tool's result (a `tool` message), so a person can play the tool by pasting its output.
Stopping a reply closes the stream, which stops the generation on a server that notices (tuneforge
serve does).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from ..chat import Sampling, Stats
from ..errors import TuneforgeError


def tool_call_line(name: str, arguments: str) -> str:
    return f"→ tool call {name}({arguments})"


@dataclass
class RemoteChat:
    url: str
    name: str
    api_key: str = "none"
    sampling: Sampling = field(default_factory=Sampling)
    device: str = "remote"
    last_stats: Stats | None = None
    tools: list[dict] | None = None  # sent with every request, so the model may call them
    lock: threading.Lock = field(default_factory=threading.Lock)
    _base: None = None
    _client: object = field(default=None, repr=False)

    chat_template = None
    has_adapter = False
    can_compare = False

    @classmethod
    def connect(cls, url: str, model: str | None = None, api_key: str | None = None) -> "RemoteChat":
        """Check the server answers and name the model (its first one when `model` is None)."""
        try:
            import openai
        except ImportError:
            raise TuneforgeError("chat --url needs the openai package", "pip install 'tuneforge[serve]'") from None
        client = openai.OpenAI(base_url=url.rstrip("/"), api_key=api_key or "none", max_retries=0, timeout=600)
        try:
            ids = [m.id for m in client.models.list().data]
        except openai.AuthenticationError:
            raise TuneforgeError(f"{url} refused the API key", "pass --api-key KEY (or set TUNEFORGE_API_KEY)") from None
        except openai.APIError as exc:
            raise TuneforgeError(f"cannot reach an OpenAI-compatible server at {url}: {exc}",
                                 "start one (tuneforge serve RUN) or check the URL; it ends in /v1") from None
        if model is None:
            if not ids:
                raise TuneforgeError(f"{url} serves no models", "start the server with a run or model")
            model = ids[0]
        elif ids and model not in ids:
            raise TuneforgeError(f"{url} does not serve '{model}'", f"models there: {', '.join(ids)}")
        return cls(url, model, api_key or "none", _client=client)

    def stream(self, messages: list[dict], sampling: Sampling | None = None,
               stop: threading.Event | None = None) -> Iterator[str]:
        s = sampling or self.sampling
        sent = time.perf_counter()
        stats = Stats()
        body = dict(model=self.name, messages=api_messages(messages), stream=True, max_tokens=s.max_new_tokens,
                    temperature=s.temperature, stream_options={"include_usage": True})
        if s.top_p < 1:
            body["top_p"] = s.top_p
        if self.tools:
            body["tools"] = self.tools
        calls: dict[int, list[str]] = {}
        response = self._client.chat.completions.create(**body)
        try:
            for chunk in response:
                if stop is not None and stop.is_set():
                    stats.stopped = True
                    break
                if chunk.usage:
                    stats.prompt_tokens, stats.new_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                for tc in delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, ["", ""])
                    entry[0] += (tc.function.name or "") if tc.function else ""
                    entry[1] += (tc.function.arguments or "") if tc.function else ""
                text = delta.content or ""
                if text:
                    if stats.ttft_s is None:
                        stats.ttft_s = stats.first_token_at = time.perf_counter() - sent
                    yield text
        finally:
            response.close()  # the server stops generating
        for name, args in calls.values():
            yield ("\n" if stats.ttft_s is not None else "") + tool_call_line(name, args)
            stats.ttft_s = stats.ttft_s or time.perf_counter() - sent
        stats.total_s = time.perf_counter() - sent
        self.last_stats = stats

    def reply(self, messages: list[dict], sampling: Sampling | None = None) -> str:
        return "".join(self.stream(messages, sampling))

    def warmup(self) -> None:
        """Nothing to warm: the server holds the model."""

    def base(self):
        raise TuneforgeError(f"'{self.name}' at {self.url} has no base model to compare with",
                             "compare mode needs a local run: tuneforge chat RUN --compare")


def parse_tool_line(text: str) -> tuple[str, dict] | None:
    """The (name, arguments) of a `tool_call_line`, for tools that read a transcript back."""
    prefix = "→ tool call "
    if not text.startswith(prefix) or "(" not in text or not text.endswith(")"):
        return None
    name, args = text[len(prefix):-1].split("(", 1)
    try:
        return name, json.loads(args)
    except json.JSONDecodeError:
        return None


def api_messages(messages: list[dict]) -> list[dict]:
    """The conversation as the API takes it: tool-call lines in a reply become `tool_calls`, and the
    user turn right after them becomes the tool's result."""
    out: list[dict] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "user" and pending:
            out.append({"role": "tool", "tool_call_id": pending[0], "content": m["content"]})
            pending = []
            continue
        if m["role"] != "assistant":
            out.append(m)
            continue
        lines = m["content"].split("\n")
        calls = [(i, parsed) for i, line in enumerate(lines) if (parsed := parse_tool_line(line.strip()))]
        if not calls:
            out.append(m)
            continue
        pending = [f"call_{len(out)}_{i}" for i, _ in calls]
        text = "\n".join(line for i, line in enumerate(lines) if i not in dict(calls)).strip()
        out.append({"role": "assistant", "content": text or None, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
            for cid, (_, (name, args)) in zip(pending, calls)]})
    return out
