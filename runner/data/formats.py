"""Row formats (alpaca, sharegpt, openai messages, plain text) converted into `Example`s.

Each converter raises `RowError` with a reason a person can act on; the caller collects them
into the validation report, so no row is ever dropped without being counted and named.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from .schema import Example, Message


class RowError(ValueError):
    """A bad row: the message is the reason shown in the report."""


SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool",
}


def detect_format(row: dict[str, Any]) -> str | None:
    if not isinstance(row, dict):
        return None
    if "conversations" in row:
        return "sharegpt"
    if "messages" in row:
        return "openai"
    if "instruction" in row and ("output" in row or "response" in row):
        return "alpaca"
    if "text" in row:
        return "text"
    return None


def _text(row: dict, key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise RowError(f"missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise RowError(f"field '{key}' is {type(value).__name__}, not text")
    return value


def from_alpaca(row: dict[str, Any]) -> Example:
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    output = _text(row, "response" if "response" in row and "output" not in row else "output")
    if not output.strip():
        raise RowError("empty assistant reply ('output')")
    prompt = f"{instruction}\n{extra}" if extra.strip() else instruction
    if not prompt.strip():
        raise RowError("empty prompt ('instruction' and 'input')")
    messages: list[Message] = []
    system = _text(row, "system", required=False)
    if system.strip():
        messages.append(Message("system", system))
    for turn in row.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise RowError("'history' must be a list of [user, assistant] text pairs")
        messages += [Message("user", turn[0]), Message("assistant", turn[1])]
    messages += [Message("user", prompt), Message("assistant", output)]
    return Example("conversation", messages)


def _tool_calls(value: str) -> list[dict[str, Any]]:
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowError(f"tool call is not valid JSON ({exc.msg})") from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and "name" in c for c in calls):
        raise RowError("tool call must be an object with a 'name' (and 'arguments')")
    return calls


def _check_order(messages: list[Message]) -> None:
    body = [m for m in messages if m.role != "system"]
    if any(m.role == "system" for m in messages[1:]):
        raise RowError("system message must come first")
    if not body or body[0].role != "user":
        raise RowError("conversation must start with a user turn (after an optional system prompt)")
    if not any(m.role == "assistant" for m in body):
        raise RowError("conversation has no assistant turn to learn from")
    for prev, cur in zip(body, body[1:]):
        if prev.role == cur.role and cur.role in {"user", "assistant"} and not (cur.role == "assistant" and prev.tool_calls):
            raise RowError(f"roles out of order: two '{cur.role}' turns in a row")
    for m in body:
        if m.role == "assistant" and not m.content.strip() and not m.tool_calls:
            raise RowError("empty assistant turn")


def from_sharegpt(row: dict[str, Any]) -> Example:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError("'conversations' must be a non-empty list")
    messages: list[Message] = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.append(Message("system", system))
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError(f"turn {i} needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise RowError(f"turn {i} has unknown role '{turn['from']}' (known: {', '.join(SHAREGPT_ROLES)})")
        if not isinstance(turn["value"], str):
            raise RowError(f"turn {i} value is {type(turn['value']).__name__}, not text")
        if turn["from"] == "function_call":
            messages.append(Message("assistant", "", tool_calls=_tool_calls(turn["value"])))
        else:
            messages.append(Message(role, turn["value"]))
    _check_order(messages)
    tools = row.get("tools")
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise RowError(f"'tools' is not valid JSON ({exc.msg})") from None
    return Example("conversation", messages, tools=tools or None)


def from_openai(row: dict[str, Any]) -> Example:
    raw = row.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RowError("'messages' must be a non-empty list")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in {"system", "user", "assistant", "tool"}:
            raise RowError(f"message {i} needs a role of system, user, assistant or tool")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise RowError(f"message {i} content is {type(content).__name__}, not text")
        calls = None
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", c) if isinstance(c, dict) else None
                if not isinstance(fn, dict) or "name" not in fn:
                    raise RowError(f"message {i} has a tool call without a function name")
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except json.JSONDecodeError as exc:
                        raise RowError(f"message {i} tool call arguments are not valid JSON ({exc.msg})") from None
                calls.append({"name": fn["name"], "arguments": args})
        messages.append(Message(m["role"], content, tool_calls=calls))
    _check_order(messages)
    return Example("conversation", messages, tools=row.get("tools") or None)


def from_text(row: dict[str, Any]) -> Example:
    text = _text(row, "text")
    if not text.strip():
        raise RowError("empty 'text'")
    return Example("text", text=text)


CONVERTERS: dict[str, Callable[[dict[str, Any]], Example]] = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "openai": from_openai,
    "text": from_text,
}
