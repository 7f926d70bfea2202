"""Tool calls with any model: named tool formats, rendered by the chat template and parsed back.

Many chat templates (SmolLM2's, most base models') ignore `tools` and `tool_calls`. When the
recipe's template cannot render them, `with_tool_format` puts a short Jinja preamble in front of
it that rewrites the conversation in a named format before the template sees it:

- the tools are described at the end of the system turn (one is added when there is none);
- an assistant tool call becomes text in the assistant turn (trained like any reply);
- a tool result becomes a user turn wrapped in <tool_response> tags (never trained).

The preamble is part of the run's saved chat template, so training, `chat`, `serve` and `export`
render tools the same way. `parse` (whole replies) and `StreamParser` (token by token) turn model
output back into tool calls; tests check that they invert the renderer exactly. Conversations
without tools render byte for byte as the template alone renders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FORMATS = ("json", "qwen", "glm4")
CHOICES = ("auto", "template", *FORMATS)
DEFAULT = "json"
OPEN, CLOSE = "<tool_call>", "</tool_call>"
MARK = "{#- tuneforge tool_format: %s -#}\n"

# The system text that describes the tools; `{tools}` is filled in by Jinja (see _PREAMBLE).
_SYSTEM = {
    "json": "'You can call these tools:\\n<tools>\\n' ~ (_tf.funcs | tojson) ~ '\\n</tools>\\nTo call one, reply "
            "with <tool_call>{\"name\": NAME, \"arguments\": {...}}</tool_call>.'",
    "qwen": "'# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with "
            "function signatures within <tools></tools> XML tags:\\n<tools>' ~ _tf.lines ~ '\\n</tools>\\n\\nFor each "
            "function call, return a json object with function name and arguments within <tool_call></tool_call> XML "
            "tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>'",
    "glm4": "'# Available tools' ~ _tf.sections ~ '\\nWhen calling one of these functions, give its name on one line "
            "and its arguments as JSON on the next.'",
}
# One call as text; `name` and `args` are JSON text.
_CALL = {
    "json": "'<tool_call>{\"name\": ' ~ name ~ ', \"arguments\": ' ~ args ~ '}</tool_call>'",
    "qwen": "'<tool_call>\\n{\"name\": ' ~ name ~ ', \"arguments\": ' ~ args ~ '}\\n</tool_call>'",
    "glm4": "(f.name) ~ '\\n' ~ args",
}
_PREAMBLE = """{%- set _tf = namespace(msgs=[], funcs=[], lines='', sections='', text='') -%}
{%- if tools -%}
{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}
{%- set _tf.funcs = _tf.funcs + [f] -%}{%- set _tf.lines = _tf.lines ~ '\\n' ~ (f | tojson) -%}
{%- set _tf.sections = _tf.sections ~ '\\n\\n## ' ~ f.name ~ '\\n\\n' ~ (f | tojson(indent=4)) -%}
{%- endfor -%}
{%- set _tf.text = SYSTEM -%}
{%- if messages and messages[0].role == 'system' -%}
{%- set _tf.msgs = [{'role': 'system', 'content': messages[0].content ~ '\\n\\n' ~ _tf.text}] -%}
{%- else -%}{%- set _tf.msgs = [{'role': 'system', 'content': _tf.text}] -%}{%- endif -%}
{%- endif -%}
{%- for m in messages -%}
{%- if tools and loop.first and m.role == 'system' -%}
{%- elif m.role == 'assistant' and m.tool_calls -%}
{%- set _tf.text = m.content or '' -%}
{%- for c in m.tool_calls -%}{%- set f = c.function if c.function is defined else c -%}
{%- set name = f.name | tojson -%}{%- set args = f.arguments if f.arguments is string else (f.arguments | tojson) -%}
{%- set _tf.text = _tf.text ~ ('\\n' if _tf.text else '') ~ CALL -%}
{%- endfor -%}
{%- set _tf.msgs = _tf.msgs + [{'role': 'assistant', 'content': _tf.text}] -%}
{%- elif m.role == 'tool' -%}
{%- set _tf.msgs = _tf.msgs + [{'role': 'user', 'content': '<tool_response>\\n' ~ m.content ~ '\\n</tool_response>'}] -%}
{%- else -%}{%- set _tf.msgs = _tf.msgs + [m] -%}{%- endif -%}
{%- endfor -%}
{%- set messages = _tf.msgs -%}{%- set tools = none -%}
"""


def preamble(fmt: str) -> str:
    """The Jinja text that rewrites tools and tool calls in `fmt` (put before a template)."""
    return MARK % fmt + _PREAMBLE.replace("SYSTEM", _SYSTEM[fmt]).replace("CALL", _CALL[fmt])


def format_of(template: str) -> str | None:
    """The tool format a template was wrapped with by `with_tool_format`, if any."""
    if template.startswith("{#- tuneforge tool_format: "):
        return template.split(":", 1)[1].split("-#}", 1)[0].strip()
    return None


_PROBE_TOOLS = [{"type": "function", "function": {"name": "tf_probe_tool", "description": "tf_probe_desc",
                                                   "parameters": {"type": "object", "properties": {}}}}]
_PROBE = [{"role": "user", "content": "hi"},
          {"role": "assistant", "content": "", "tool_calls": [
              {"type": "function", "function": {"name": "tf_probe_tool", "arguments": {"tf_probe_arg": 1}}}]},
          {"role": "tool", "content": "tf_probe_result"}, {"role": "assistant", "content": "ok"}]


def renders_tools(template: str, tokenizer=None) -> bool:
    """Whether a template shows the tools, a call's name and arguments, and the tool result."""
    from transformers.utils.chat_template_utils import render_jinja_template

    specials = dict(getattr(tokenizer, "special_tokens_map", {}) or {})
    try:
        out, _ = render_jinja_template(conversations=[_PROBE], tools=_PROBE_TOOLS, chat_template=template, **specials)
    except Exception:  # noqa: BLE001 - a template may raise_exception() on tool turns
        return False
    text = out[0]
    return all(s in text for s in ("tf_probe_desc", "tf_probe_tool", "tf_probe_arg", "tf_probe_result"))


def with_tool_format(template: str, name: str, choice: str = "auto", tokenizer=None) -> tuple[str, str]:
    """(template, name) rendering tools as `choice` says: 'template' = as is; 'auto' = as is when the
    template renders tools, else the default format; a format name = that format."""
    if choice not in CHOICES:
        from ..errors import TuneforgeError

        raise TuneforgeError(f"unknown tool format '{choice}'", f"use one of {', '.join(CHOICES)}")
    if choice == "template" or format_of(template) is not None:
        return template, name
    if choice == "auto":
        if renders_tools(template, tokenizer):
            return template, name
        choice = DEFAULT
    return preamble(choice) + template, f"{name} + tool format {choice}"


# -- parsing model output back into tool calls ---------------------------------------------------

@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


def render_call(call: ToolCall, fmt: str) -> str:
    """The text of one call in `fmt`, as the template preamble writes it (used by tests and streaming)."""
    name, args = json.dumps(call.name, ensure_ascii=False), json.dumps(call.arguments, ensure_ascii=False)
    return {"json": f'{OPEN}{{"name": {name}, "arguments": {args}}}{CLOSE}',
            "qwen": f'{OPEN}\n{{"name": {name}, "arguments": {args}}}\n{CLOSE}',
            "glm4": f"{call.name}\n{args}"}[fmt]


def _call_from(obj: Any) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(obj["name"], args) if isinstance(args, dict) else None


def parse(text: str, fmt: str, tool_names: list[str] | None = None) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a whole reply. Text that does not parse as a call stays content."""
    if fmt == "glm4":
        return _parse_glm4(text, tool_names or [])
    calls: list[ToolCall] = []
    content: list[str] = []
    pos = 0
    decoder = json.JSONDecoder()
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            content.append(text[pos:])
            break
        body = start + len(OPEN)
        while body < len(text) and text[body].isspace():
            body += 1
        try:
            obj, end = decoder.raw_decode(text, body)
        except json.JSONDecodeError:
            obj, end = None, body
        while end < len(text) and text[end].isspace():
            end += 1
        call = _call_from(obj)
        if call is None or not text.startswith(CLOSE, end):
            content.append(text[pos:body])
            pos = body
            continue
        content.append(text[pos:start])
        calls.append(call)
        pos = end + len(CLOSE)
    return "".join(content).strip(), calls


def _parse_glm4(text: str, tool_names: list[str]) -> tuple[str, list[ToolCall]]:
    """GLM-4 style: `name` on a line, its JSON arguments after it; only a known tool name counts."""
    name, _, rest = text.strip().partition("\n")
    if name.strip() not in tool_names:
        return text.strip(), []
    try:
        args = json.loads(rest)
    except json.JSONDecodeError:
        return text.strip(), []
    return ("", [ToolCall(name.strip(), args)]) if isinstance(args, dict) else (text.strip(), [])


class StreamParser:
    """Parses a reply as it streams: `feed(text)` returns content pieces (str) and finished ToolCalls.

    Content is passed on at once except text that may be the start of a `<tool_call>` tag, which
    waits until it is known. GLM-4 calls carry no tag: that format holds the reply to the end.
    """

    def __init__(self, fmt: str, tool_names: list[str] | None = None):
        self.fmt, self.tool_names = fmt, tool_names or []
        self.buf = ""
        self.started = False  # content sent already (leading whitespace is dropped like parse() does)

    def feed(self, text: str) -> list[str | ToolCall]:
        self.buf += text
        if self.fmt == "glm4":
            return []
        out: list[str | ToolCall] = []
        while True:
            start = self.buf.find(OPEN)
            if start < 0:
                keep = _partial_tag_len(self.buf)
                self._emit(self.buf[: len(self.buf) - keep], out)
                self.buf = self.buf[len(self.buf) - keep:]
                return out
            close = self.buf.find(CLOSE, start)
            if close < 0:
                self._emit(self.buf[:start], out)
                self.buf = self.buf[start:]
                return out
            content, calls = parse(self.buf[: close + len(CLOSE)], self.fmt)
            if calls:
                self._emit(self.buf[:start], out)
                out.extend(calls)
            else:
                self._emit(self.buf[: close + len(CLOSE)], out)
            self.buf = self.buf[close + len(CLOSE):]

    def close(self) -> list[str | ToolCall]:
        """The rest at the end of the reply."""
        text, self.buf = self.buf, ""
        if self.fmt == "glm4":
            content, calls = parse(text, "glm4", self.tool_names)
            return [*calls] if calls else ([content] if content else [])
        out: list[str | ToolCall] = []
        self._emit(text, out)
        return out

    def _emit(self, text: str, out: list) -> None:
        if not self.started:
            text = text.lstrip()
        if text:
            self.started = True
            out.append(text)


def _partial_tag_len(text: str) -> int:
    """Length of the longest end of `text` that begins `<tool_call>`."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0
