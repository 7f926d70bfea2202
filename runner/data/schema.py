"""The one shape data takes after reading: every input format converts into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


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
    """One training row. `kind` says which fields matter:

    - conversation: messages (system first if any), tools
    - text: text (continued pre-training)
    """

    kind: Literal["conversation", "text"]
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    text: str | None = None
    source: str = ""  # "file.json row 12" for error reports
