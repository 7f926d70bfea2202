"""Row layouts (alpaca, sharegpt, openai messages, text) converted into `Example`s.

A layout says where the text is; the kind (conversation, preference, feedback, text) says what
the row teaches. Column and role-tag names follow LLaMA-Factory's `dataset_info.json`
(`columns: {prompt, query, response, history, messages, system, tools, chosen, rejected, kto_tag}`,
`tags: {role_tag, content_tag, user_tag, assistant_tag, observation_tag, function_tag, system_tag}`)
so its users bring data unchanged. Each converter raises `RowError(reason, detail)`: the reason is
a short category the validation report counts, the detail says where in the row it went wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .schema import Example, Message

LAYOUTS = ("alpaca", "sharegpt", "openai", "text")

# Reasons (the report's categories). Kept as constants so tests and docs name the same thing.
MISSING_FIELD = "missing field"
NOT_TEXT = "non-string content"
EMPTY_REPLY = "empty assistant turn"
EMPTY_PROMPT = "empty prompt"
ORDER = "roles out of order"
UNKNOWN_ROLE = "unknown role"
BAD_TOOL_CALL = "tool call is not valid JSON"
BAD_TOOLS = "tools list is not valid JSON"
SAME_PAIR = "chosen equals rejected"
BAD_LABEL = "feedback label is not true/false"
NOT_OBJECT = "row is not an object"
BAD_SHAPE = "malformed field"
TOO_LONG = "too long after truncation"
TEMPLATE = "chat template cannot place the reply"
WRONG_KIND = "wrong kind of row for the stage"
SAME_AFTER_CUT = "chosen equals rejected after truncation"
BAD_MARGIN = "margin is not a number"


class RowError(ValueError):
    """A bad row. `reason` is the report category, `detail` the row-specific explanation."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


DEFAULT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
               "system": "system", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools",
                 "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"},
    "openai": {"messages": "messages", "prompt": "prompt", "completion": "completion", "tools": "tools",
               "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"},
    "text": {"text": "text"},
}
DEFAULT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
# Role names understood without any tag mapping (ShareGPT variants and OpenAI roles).
KNOWN_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "system": "system", "observation": "tool", "tool": "tool", "function": "tool", "ipython": "tool",
}


@dataclass
class Mapping:
    """Where a dataset keeps each field: LLaMA-Factory style column and tag overrides."""

    layout: str
    kind: str = "auto"  # auto | conversation | preference | feedback | text
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def col(self, name: str) -> str | None:
        return self.columns.get(name) or DEFAULT_COLUMNS.get(self.layout, {}).get(name)

    def tag(self, name: str) -> str:
        return self.tags.get(name) or DEFAULT_TAGS[name]


def detect_layout(row: Any, columns: dict[str, str] | None = None) -> str | None:
    """The layout of one row (None when it cannot tell); explicit column names take precedence."""
    if not isinstance(row, dict):
        return None
    columns = columns or {}
    msgs_col = columns.get("messages")
    for key in ([msgs_col] if msgs_col else []) + ["conversations", "messages"]:
        turns = row.get(key)
        if isinstance(turns, list):
            first = next((t for t in turns if isinstance(t, dict)), {})
            return "openai" if "role" in first and "from" not in first else "sharegpt"
    if (columns.get("prompt") in row and not any(c in columns for c in ("response", "chosen", "kto_tag", "query"))
            and not any(k in row for k in ("output", "response", "chosen", "label", "text"))):
        return "text"  # LLaMA-Factory pre-training entries name only a prompt column
    if isinstance(row.get("prompt"), list) or (isinstance(row.get("prompt"), str) and "instruction" not in row
                                                and "prompt" not in columns and not ({"output", "response"} & set(row))):
        return "openai"  # TRL's shapes: prompt + completion | chosen/rejected (text or messages), + label
    if "instruction" in row or "prompt" in row or (columns.get("prompt") in row):
        return "alpaca"
    if "text" in row:
        return "text"
    return None


def detect_kind(row: dict, m: Mapping) -> str:
    if m.layout == "text":
        return "text"
    chosen, rejected = m.col("chosen"), m.col("rejected")
    if chosen in row and rejected in row:
        return "preference"
    if label_column(row, m) in row:
        return "feedback"
    return "conversation"


def label_column(row: dict, m: Mapping) -> str | None:
    """The feedback label's column: the mapped kto_tag, else 'label', else LLaMA-Factory's own name 'kto_tag'."""
    col = m.col("kto_tag")
    if col not in row and "kto_tag" not in m.columns and "kto_tag" in row:
        return "kto_tag"
    return col


# ------------------------------------------------------------------------------------------
# field helpers


def _text(row: dict, key: str | None, required: bool = True, what: str | None = None) -> str:
    value = row.get(key) if key else None
    if value is None:
        if required:
            raise RowError(MISSING_FIELD, f"'{what or key}' is missing")
        return ""
    if not isinstance(value, str):
        raise RowError(NOT_TEXT, f"'{key}' is {type(value).__name__}, not text")
    return value


def _tool_calls(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(BAD_TOOL_CALL, f"{exc.msg} at column {exc.colno}") from None
    calls = value if isinstance(value, list) else [value]
    out = []
    for c in calls:
        fn = c.get("function", c) if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RowError(BAD_TOOL_CALL, "a tool call needs a 'name' (and 'arguments')")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise RowError(BAD_TOOL_CALL, f"arguments of '{fn['name']}': {exc.msg}") from None
        out.append({"name": fn["name"], "arguments": args})
    return out


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(BAD_TOOLS, exc.msg) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError(BAD_TOOLS, "'tools' must be a list of function descriptions")
    return value


def check_order(messages: list[Message], need_reply: bool = True) -> None:
    """System first; then a user turn; user/assistant alternate; tool turns answer tool calls."""
    if any(m.role == "system" for m in messages[1:]):
        raise RowError(ORDER, "the system message must come first")
    body = [m for m in messages if m.role != "system"]
    if not body or body[0].role != "user":
        raise RowError(ORDER, "the conversation must start with a user turn (after an optional system prompt)")
    for i, (prev, cur) in enumerate(zip(body, body[1:]), 1):
        if cur.role == "tool" and not (prev.role == "tool" or (prev.role == "assistant" and prev.tool_calls)):
            raise RowError(ORDER, f"turn {i}: a tool result must follow an assistant tool call")
        if prev.role == cur.role and cur.role in {"user", "assistant"} and not (cur.role == "assistant" and prev.tool_calls):
            raise RowError(ORDER, f"turn {i}: two '{cur.role}' turns in a row")
        if prev.role == "assistant" and prev.tool_calls and cur.role != "tool":
            raise RowError(ORDER, f"turn {i}: an assistant tool call must be answered by a tool turn")
    for i, m in enumerate(body):
        if m.role == "assistant" and not m.content.strip() and not m.tool_calls:
            raise RowError(EMPTY_REPLY, f"turn {i} is empty")
    if need_reply and not any(m.role == "assistant" for m in body):
        raise RowError(EMPTY_REPLY, "the conversation has no assistant turn to learn from")


# ------------------------------------------------------------------------------------------
# turns of each layout


def _sharegpt_turns(turns: Any, m: Mapping, col: str) -> list[Message]:
    if not isinstance(turns, list):
        raise RowError(MISSING_FIELD if turns is None else BAD_SHAPE, f"'{col}' must be a list of turns")
    roles = dict(KNOWN_ROLES)
    roles.update({m.tag("user_tag"): "user", m.tag("assistant_tag"): "assistant",
                  m.tag("observation_tag"): "tool", m.tag("system_tag"): "system"})
    fn_tag, role_tag, content_tag = m.tag("function_tag"), m.tag("role_tag"), m.tag("content_tag")
    out: list[Message] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_tag not in turn or content_tag not in turn:
            raise RowError(MISSING_FIELD, f"turn {i} needs '{role_tag}' and '{content_tag}'")
        tag, value = turn[role_tag], turn[content_tag]
        if not isinstance(value, str):
            raise RowError(NOT_TEXT, f"turn {i} '{content_tag}' is {type(value).__name__}, not text")
        if tag == fn_tag or tag == "function_call":
            out.append(Message("assistant", "", tool_calls=_tool_calls(value)))
        elif tag in roles:
            out.append(Message(roles[tag], value))
        else:
            raise RowError(UNKNOWN_ROLE, f"turn {i} has role '{tag}' (known: {', '.join(sorted(set(roles) | {fn_tag}))})")
    return out


def _openai_turns(raw: Any, col: str) -> list[Message]:
    if not isinstance(raw, list):
        raise RowError(MISSING_FIELD if raw is None else BAD_SHAPE, f"'{col}' must be a list of messages")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise RowError(BAD_SHAPE, f"message {i} is not an object")
        role = msg.get("role")
        if role not in {"system", "user", "assistant", "tool", "developer"}:
            raise RowError(UNKNOWN_ROLE, f"message {i} has role {role!r} (known: system, user, assistant, tool)")
        content = msg.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):  # content parts: only text is supported
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise RowError(NOT_TEXT, f"message {i} has non-text content parts")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RowError(NOT_TEXT, f"message {i} content is {type(content).__name__}, not text")
        calls = _tool_calls(msg["tool_calls"]) if msg.get("tool_calls") else None
        out.append(Message("system" if role == "developer" else role, content, tool_calls=calls))
    return out


def _reply(value: Any, m: Mapping, what: str) -> Message:
    """One candidate reply (preference chosen/rejected): text, a turn object, or a one-turn list."""
    if isinstance(value, list):
        if len(value) != 1:
            value = [v for v in value if isinstance(v, dict) and v.get("role", v.get(m.tag("role_tag"))) != "user"]
            if len(value) != 1:
                raise RowError(BAD_SHAPE, f"'{what}' must hold exactly one assistant reply")
        value = value[0]
    if value is None:
        raise RowError(MISSING_FIELD, f"'{what}' is missing")
    if isinstance(value, str):
        msg = Message("assistant", value)
    elif isinstance(value, dict):
        turns = _openai_turns([value], what) if "role" in value else _sharegpt_turns([value], m, what)
        msg = turns[0]
        if msg.role != "assistant":
            raise RowError(ORDER, f"'{what}' must be an assistant reply, not '{msg.role}'")
    else:
        raise RowError(NOT_TEXT, f"'{what}' is {type(value).__name__}, not text")
    if not msg.content.strip() and not msg.tool_calls:
        raise RowError(EMPTY_REPLY, f"'{what}' is empty")
    return msg


def _alpaca_prompt(row: dict, m: Mapping) -> list[Message]:
    prompt_col = m.col("prompt")
    instruction = _text(row, prompt_col, what=prompt_col)
    extra = _text(row, m.col("query"), required=False)
    prompt = f"{instruction}\n{extra}" if extra.strip() else instruction
    if not prompt.strip():
        raise RowError(EMPTY_PROMPT, f"'{prompt_col}' and '{m.col('query')}' are empty")
    messages: list[Message] = []
    system = _text(row, m.col("system"), required=False)
    if system.strip():
        messages.append(Message("system", system))
    history = row.get(m.col("history")) if m.col("history") else None
    for j, turn in enumerate(history or []):
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise RowError(BAD_SHAPE, f"history item {j} must be a [user, assistant] pair")
        if not all(isinstance(t, str) for t in turn):
            raise RowError(NOT_TEXT, f"history item {j} holds non-text")
        messages += [Message("user", turn[0]), Message("assistant", turn[1])]
    messages.append(Message("user", prompt))
    return messages


def _conversation_prompt(row: dict, m: Mapping) -> list[Message]:
    col = m.col("messages")
    if m.layout == "openai" and col not in row and m.col("prompt") in row:
        col = m.col("prompt")
    if m.layout == "openai" and isinstance(row.get(col), str):  # {"prompt": "text", ...}
        if not row[col].strip():
            raise RowError(EMPTY_PROMPT, f"'{col}' is empty")
        turns = [Message("user", row[col])]
    elif m.layout == "openai":
        turns = _openai_turns(row.get(col), col)
    else:
        turns = _sharegpt_turns(row.get(col), m, col)
    system = row.get(m.col("system")) if m.col("system") else None
    if isinstance(system, str) and system.strip() and not (turns and turns[0].role == "system"):
        turns.insert(0, Message("system", system))
    elif system is not None and not isinstance(system, str):
        raise RowError(NOT_TEXT, f"'{m.col('system')}' is {type(system).__name__}, not text")
    return turns


# ------------------------------------------------------------------------------------------
# one row → one Example


def convert(row: Any, m: Mapping) -> Example:
    """Convert one row under a mapping; raises RowError with a reason for anything wrong."""
    if not isinstance(row, dict):
        raise RowError(NOT_OBJECT, f"got a {type(row).__name__}")
    kind = m.kind if m.kind != "auto" else detect_kind(row, m)
    if kind == "text" or m.layout == "text":
        col = m.col("text") if m.layout == "text" else (m.col("prompt") or "text")
        if m.layout == "text" and m.columns.get("prompt"):
            col = m.columns["prompt"]
        text = _text(row, col)
        if not text.strip():
            raise RowError(EMPTY_PROMPT, f"'{col}' is empty")
        return Example("text", text=text)

    tools = _tools(row.get(m.col("tools"))) if m.col("tools") else None
    if m.layout == "alpaca":
        messages = _alpaca_prompt(row, m)
    else:
        messages = _conversation_prompt(row, m)

    if kind == "preference":
        chosen = _reply(row.get(m.col("chosen")), m, m.col("chosen"))
        rejected = _reply(row.get(m.col("rejected")), m, m.col("rejected"))
        if messages and messages[-1].role == "assistant":
            raise RowError(ORDER, "the shared prompt must end with a user (or tool) turn")
        check_order(messages, need_reply=False)
        if (chosen.content, chosen.tool_calls) == (rejected.content, rejected.tool_calls):
            raise RowError(SAME_PAIR, "both replies are identical")
        return Example("preference", messages, tools=tools, chosen=chosen, rejected=rejected)

    if kind == "conversation" and m.col("chosen") in row and m.col("rejected") in row:
        messages.append(_reply(row.get(m.col("chosen")), m, m.col("chosen")))  # SFT on the preferred reply
    elif m.layout == "alpaca":
        out_col = m.col("response")
        if out_col not in row and "response" in row and "response" not in m.columns:
            out_col = "response"
        reply = _text(row, out_col)
        if not reply.strip():
            raise RowError(EMPTY_REPLY, f"'{out_col}' is empty")
        messages.append(Message("assistant", reply))
    elif m.layout == "openai" and m.col("completion") in row:
        completion = row[m.col("completion")]
        if isinstance(completion, str):
            if not completion.strip():
                raise RowError(EMPTY_REPLY, f"'{m.col('completion')}' is empty")
            messages.append(Message("assistant", completion))
        else:
            messages += _openai_turns(completion, m.col("completion"))
    check_order(messages)
    if kind == "feedback":
        col = label_column(row, m)
        label = row.get(col)
        if isinstance(label, str) and label.lower() in {"true", "false"}:
            label = label.lower() == "true"
        if not isinstance(label, bool):
            raise RowError(BAD_LABEL, f"'{col}' is {label!r}")
        if messages[-1].role != "assistant":
            raise RowError(ORDER, "the judged conversation must end with an assistant turn")
        return Example("feedback", messages, tools=tools, label=label)
    return Example("conversation", messages, tools=tools)
