"""The one shape data takes after reading: every input format converts into these.

One `Example` per row, whatever the training stage:

- conversation (SFT): `messages` (system first if any, then user / assistant / tool turns;
  assistant turns may carry `tool_calls`) and the `tools` the model may call;
- preference (DPO-style): `messages` is the shared prompt (ends with a user or tool turn),
  `chosen` and `rejected` are the two candidate assistant replies;
- feedback (KTO-style, unpaired): a conversation whose last assistant turn is judged, with
  `label` True (desirable) or False (undesirable);
- text (continued pre-training): `text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
Kind = Literal["conversation", "preference", "feedback", "text"]
KINDS: tuple[str, ...] = ("conversation", "preference", "feedback", "text")


@dataclass
class Message:
    role: Role
    content: str
    tool_calls: list[dict[str, Any]] | None = None  # assistant tool calls: [{"name":..., "arguments":{...}}]

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [{"type": "function", "function": c} for c in self.tool_calls]
        return out


@dataclass
class Example:
    """One training row. `kind` says which fields matter (see the module docstring)."""

    kind: Kind
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    text: str | None = None
    chosen: Message | None = None
    rejected: Message | None = None
    label: bool | None = None
    margin: float | None = None  # preference: how much better chosen is (rm.margin_column)
    source: str = ""  # "file.json row 12" for error reports

    def openai_messages(self, reply: Message | None = None) -> list[dict[str, Any]]:
        """The conversation as chat-template messages, optionally followed by one reply."""
        msgs = [m.to_openai() for m in self.messages]
        if reply is not None:
            msgs.append(reply.to_openai())
        return msgs
