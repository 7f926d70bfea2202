"""One request's generation, on transformers' engine: prompt → text pieces → content, reasoning, tool calls.

The engine (transformers' `EngineClient`, continuous batching with paged attention where it
applies) turns a prompt into tokens and the tokens into text. What it lacks is done here: stop
strings (continuous batching ignores them; the text is cut and the generation cancelled at the
first one), `<think>` blocks as reasoning, and tool calls parsed with the run's tool format
(data/tool_format.py, the inverse of what the run trained on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator

from ..data.tool_format import FORMATS, StreamParser, ToolCall, format_of
from .wire import ApiError

THINK, END_THINK = "<think>", "</think>"


@dataclass
class Piece:
    kind: str  # "content" | "reasoning" | "tool"
    text: str = ""
    call: ToolCall | None = None


@dataclass
class Outcome:
    """Filled in as the generation runs; complete when its pieces are exhausted."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "stop"
    tool_calls: list[ToolCall] = field(default_factory=list)


def tool_format_for(template: str) -> str:
    """The format a served model writes tool calls in: the run's, or Hermes/Qwen tags for templates with their own."""
    fmt = format_of(template)
    return fmt if fmt in FORMATS else "qwen"


class Generation:
    """Streams one request's reply as Pieces; `outcome` says how it ended."""

    def __init__(self, engine, inputs: dict, kwargs: dict, prompt_tokens: int, stops: list[str],
                 tools: list[str] | None, template: str):
        self.queue, self.streamer = engine.generate_streaming(inputs, kwargs)
        self.max_new = kwargs.get("max_new_tokens")
        self.stops = stops
        self.outcome = Outcome(prompt_tokens)
        self.tools = StreamParser(tool_format_for(template), tools) if tools is not None else None
        self.think = _ThinkSplitter(THINK in template)

    def cancel(self) -> None:
        self.streamer.cancel()

    async def pieces(self) -> AsyncIterator[Piece]:
        try:
            async for text in self._text():
                for p in self._split(text):
                    yield p
            for p in self._split(None):
                yield p
        finally:
            self.streamer.cancel()  # the client left, a stop string matched, or the end: the engine stops
            self.outcome.completion_tokens = self.streamer.total_tokens
        if self.outcome.tool_calls:
            self.outcome.finish_reason = "tool_calls"

    async def _text(self) -> AsyncIterator[str]:
        """The raw reply, cut at the first stop string."""
        from transformers.cli.serving.utils import BaseHandler, _StreamError

        keep = max((len(s) for s in self.stops), default=1) - 1
        held = ""
        while True:
            for item in await BaseHandler.read_queue_outputs(self.queue):
                if item is None:
                    if held:
                        yield held
                    if self.max_new is not None and self.streamer.total_tokens >= self.max_new:
                        self.outcome.finish_reason = "length"
                    return
                if isinstance(item, _StreamError):
                    raise ApiError(503 if "dead" in item.msg.lower() else 500, f"generation failed: {item.msg}")
                if not isinstance(item, str):
                    continue
                held += item
                hits = [i for i in (held.find(s) for s in self.stops) if i >= 0]
                if hits:
                    if min(hits):
                        yield held[: min(hits)]
                    self.outcome.finish_reason = "stop"
                    return
                if len(held) > keep:
                    yield held[: len(held) - keep]
                    held = held[len(held) - keep:]

    def _split(self, text: str | None) -> list[Piece]:
        out: list[Piece] = []
        for kind, part in self.think.feed(text):
            if kind == "reasoning":
                out.append(Piece("reasoning", part))
            elif self.tools is None:
                out.extend([Piece("content", part)] if part else [])
            else:
                for item in (self.tools.feed(part) if part else []):
                    out.append(self._piece(item))
        if text is None and self.tools is not None:
            out.extend(self._piece(item) for item in self.tools.close())
        return out

    def _piece(self, item) -> Piece:
        if isinstance(item, ToolCall):
            self.outcome.tool_calls.append(item)
            return Piece("tool", call=item)
        return Piece("content", item)


class _ThinkSplitter:
    """Routes a leading <think>...</think> block to reasoning when the template has one."""

    def __init__(self, on: bool):
        self.state = "start" if on else "content"
        self.buf = ""
        self.started = False  # reasoning text seen

    def feed(self, text: str | None) -> list[tuple[str, str]]:
        if text is None:  # the end: what is held goes out as it stands
            rest, self.buf = self.buf, ""
            if self.state == "think":
                rest = rest.rstrip()
            return [("reasoning" if self.state == "think" else "content", rest)] if rest else []
        if self.state == "after":  # the blank line after </think> is not content either
            text = text.lstrip()
            if text:
                self.state = "content"
            return [("content", text)] if text else []
        if self.state == "content":
            return [("content", text)]
        self.buf += text
        if self.state == "start":
            head = self.buf.lstrip()
            if len(head) < len(THINK) and THINK.startswith(head):
                return []
            if not head.startswith(THINK):
                self.state, rest, self.buf = "content", self.buf, ""
                return [("content", rest)]
            self.state, self.buf = "think", head[len(THINK):]
        if not self.started:  # the newline after <think> is not reasoning
            self.buf = self.buf.lstrip()
            self.started = bool(self.buf)
        end = self.buf.find(END_THINK)
        if end >= 0:
            reasoning, rest = self.buf[:end].rstrip(), self.buf[end + len(END_THINK):].lstrip()
            self.state, self.buf = "after", rest
            if rest:
                self.state, self.buf = "content", ""
            return [p for p in (("reasoning", reasoning), ("content", rest)) if p[1]]
        safe = len(self.buf) - (len(END_THINK) - 1)
        if safe <= 0:
            return []
        out, self.buf = self.buf[:safe], self.buf[safe:]
        return [("reasoning", out)]
