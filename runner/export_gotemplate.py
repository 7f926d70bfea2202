"""A small renderer for Go's text/template, the language of Ollama's Modelfile TEMPLATE.

Why it exists: the Ollama export translates a run's Jinja chat template into Go-template syntax, and
a translation is only trusted once both render the same conversation to the same text. Go is not
installed where tuneforge runs, so this renders the subset Ollama's own templates use: text with
`{{- -}}` trimming, `.Field` / `$` / `$var` access, `:=` / `=` variables, `if / else if / else`,
`range [$i, $x :=]`, parentheses and `|` pipelines, and the functions and, or, not, eq, ne, lt, le,
gt, ge, len, slice, index, print and Ollama's json. Anything else raises GoTemplateError, so a
template that would need more cannot pass the check by accident.
"""

from __future__ import annotations

import json
import re
from typing import Any


class GoTemplateError(ValueError):
    pass


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)|(?P<var>\$\w*(?:\.\w+)*)'
                    r'|(?P<field>(?:\.\w+)+|\.)|(?P<op>:=|=|\(|\)|\||,)|(?P<ident>\w+))')


def _lex(expr: str) -> list[tuple[str, str]]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot read {expr[pos:]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def _parse(source: str) -> list:
    """Text and actions -> a tree: ("text", s) | ("out", toks) | ("set", name, declare, toks) |
    ("if", [(toks, body)], else_body) | ("range", vars, toks, body)."""
    pieces: list = []
    pos = 0
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if pieces and pieces[-1][0] == "trim_right":
            pieces.pop()
            text = text.lstrip()
        pieces.append(("text", text))
        body = m.group(2).strip()
        if not body.startswith("/*"):
            pieces.append(("action", body))
        if m.group(3):
            pieces.append(("trim_right", None))
        pos = m.end()
    tail = source[pos:]
    if pieces and pieces[-1][0] == "trim_right":
        pieces.pop()
        tail = tail.lstrip()
    pieces.append(("text", tail))

    def block(i: int, stop: tuple[str, ...]) -> tuple[list, int, str]:
        nodes: list = []
        while i < len(pieces):
            kind, body = pieces[i]
            i += 1
            if kind == "text":
                if body:
                    nodes.append(("text", body))
                continue
            word = body.split(None, 1)[0] if body else ""
            if word in stop or (word == "else" and "else" in stop):
                return nodes, i, body
            if word == "if":
                branches, else_body = [], []
                cond = body[2:]
                while True:
                    inner, i, ended = block(i, ("end", "else"))
                    branches.append((_lex(cond), inner))
                    if ended == "end":
                        break
                    rest = ended[4:].strip()
                    if rest.startswith("if "):
                        cond = rest[3:]
                        continue
                    else_body, i, _ = block(i, ("end",))
                    break
                nodes.append(("if", branches, else_body))
            elif word == "range":
                spec = body[5:].strip()
                names: list[str] = []
                if ":=" in spec:
                    left, spec = spec.split(":=", 1)
                    names = [n.strip() for n in left.split(",")]
                inner, i, ended = block(i, ("end", "else"))
                if ended != "end":
                    raise GoTemplateError("range ... else is not supported")
                nodes.append(("range", names, _lex(spec), inner))
            elif word in ("with", "define", "template", "block", "break", "continue"):
                raise GoTemplateError(f"'{word}' is not supported by this renderer")
            else:
                m = re.match(r"(\$\w*)\s*(:=|=)(?!=)\s*(.*)", body, re.S)
                if m:
                    nodes.append(("set", m.group(1), m.group(2) == ":=", _lex(m.group(3))))
                else:
                    nodes.append(("out", _lex(body)))
        if stop:
            raise GoTemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
        return nodes, i, ""

    return block(0, ())[0]


def truthy(value: Any) -> bool:
    return not (value is None or value is False or value == 0 and not isinstance(value, str) or
                (isinstance(value, (str, list, tuple, dict)) and len(value) == 0))


def go_json(value: Any) -> str:
    """encoding/json's output: compact, map keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_fmt(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)



FUNCS = {
    "and": lambda *a: next((v for v in a if not truthy(v)), a[-1]),  # piped form; direct calls short-circuit
    "or": lambda *a: next((v for v in a if truthy(v)), a[-1]),
    "not": lambda a: not truthy(a),
    "eq": lambda a, *rest: any(a == b for b in rest),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "len": lambda a: len(a),
    "slice": lambda a, *ij: a[slice(*ij)] if len(ij) != 1 else a[ij[0]:],
    "index": lambda a, *keys: _index(a, keys),
    "print": lambda *a: "".join(_fmt(v) for v in a) if all(isinstance(v, str) for v in a) else " ".join(_fmt(v) for v in a),
    "json": go_json,
}


def _index(value, keys):
    for k in keys:
        value = value[k]
    return value


class _Scope:
    def __init__(self, root):
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def get(self, name: str):
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"undefined variable {name}")

    def assign(self, name: str, value):
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"undefined variable {name}")


def _field(obj, path: list[str]):
    for name in path:
        if not isinstance(obj, dict) or name not in obj:
            raise GoTemplateError(f"can't evaluate field {name} in {type(obj).__name__}")
        obj = obj[name]
    return obj


def _eval(toks: list[tuple[str, str]], dot, scope: _Scope):
    """A pipeline: commands joined by |, each a function with arguments or one operand."""
    commands, current, depth = [], [], 0
    for tok in toks:
        if tok == ("op", "|") and depth == 0:
            commands.append(current)
            current = []
            continue
        depth += tok == ("op", "(")
        depth -= tok == ("op", ")")
        current.append(tok)
    commands.append(current)
    value, piped = None, False
    for cmd in commands:
        value = _command(cmd, dot, scope, [value] if piped else [])
        piped = True
    return value


def _groups(toks) -> list[list]:
    """Split a command's arguments: one operand, or a parenthesised pipeline with optional .Field after it."""
    out, i = [], 0
    while i < len(toks):
        j = i + 1
        if toks[i] == ("op", "("):
            depth = 1
            while depth:
                depth += toks[j] == ("op", "(")
                depth -= toks[j] == ("op", ")")
                j += 1
            if j < len(toks) and toks[j][0] == "field" and toks[j][1] != ".":
                j += 1
        out.append(toks[i:j])
        i = j
    return out


def _value(group, dot, scope):
    if group[0] == ("op", "("):
        has_field = group[-1][0] == "field"
        value = _eval(group[1:-2] if has_field else group[1:-1], dot, scope)
        return _field(value, group[-1][1][1:].split(".")) if has_field else value
    return _operand(*group[0], dot, scope)


def _args(toks, dot, scope) -> list:
    return [_value(g, dot, scope) for g in _groups(toks)]


def _operand(kind, text, dot, scope):
    if kind == "str":
        return json.loads(text)
    if kind == "raw":
        return text[1:-1]
    if kind == "num":
        return int(text)
    if kind == "field":
        return dot if text == "." else _field(dot, text[1:].split("."))
    if kind == "var":
        name, *path = text.split(".")
        return _field(scope.get(name), path)
    if kind == "ident" and text in ("true", "false", "nil"):
        return {"true": True, "false": False, "nil": None}[text]
    raise GoTemplateError(f"unexpected {text!r}")


def _command(toks, dot, scope, piped: list):
    if not toks:
        raise GoTemplateError("empty command")
    kind, text = toks[0]
    if kind == "ident" and text not in ("true", "false", "nil"):
        if text not in FUNCS:
            raise GoTemplateError(f'function "{text}" not defined')
        if text in ("and", "or") and not piped:  # Go 1.18+: stop at the first value that decides
            value = None
            for group in _groups(toks[1:]):
                value = _value(group, dot, scope)
                if truthy(value) != (text == "and"):
                    return value
            return value
        return FUNCS[text](*_args(toks[1:], dot, scope), *piped)
    values = _args(toks, dot, scope)
    if len(values) != 1 or piped:
        raise GoTemplateError(f"can't give arguments to a non-function {text!r}")
    return values[0]


def _run(nodes, dot, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "out":
            out.append(_fmt(_eval(node[1], dot, scope)))
        elif kind == "set":
            value = _eval(node[3], dot, scope)
            if node[2]:
                scope.frames[-1][node[1]] = value
            else:
                scope.assign(node[1], value)
        elif kind == "if":
            for cond, body in node[1]:
                if truthy(_eval(cond, dot, scope)):
                    scope.frames.append({})
                    _run(body, dot, scope, out)
                    scope.frames.pop()
                    break
            else:
                scope.frames.append({})
                _run(node[2], dot, scope, out)
                scope.frames.pop()
        elif kind == "range":
            items = _eval(node[2], dot, scope)
            for i, item in enumerate(items or []):
                frame: dict[str, Any] = {}
                if len(node[1]) == 2:
                    frame[node[1][0]], frame[node[1][1]] = i, item
                elif len(node[1]) == 1:
                    frame[node[1][0]] = item
                scope.frames.append(frame)
                _run(node[3], item, scope, out)
                scope.frames.pop()


def render(template: str, data: dict[str, Any]) -> str:
    """Execute `template` on `data` (maps stand in for Ollama's structs: .Messages, .Role, ...)."""
    out: list[str] = []
    _run(_parse(template), data, _Scope(data), out)
    return "".join(out)
