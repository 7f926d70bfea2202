"""Where data becomes token ids: chat template rendering and exact loss masks.

The text is rendered once with the tokenizer's own chat template (the one saved with the run and
used again by chat and export), tokenized once, and the trained tokens are found by character
spans: each assistant reply's content plus the template's end-of-turn marker. This needs no
`{% generation %}` tags, so it works for any template whose rendering keeps the reply's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .formats import RowError
from .schema import Example

BUILTIN_TEMPLATES = ("chatml", "llama3", "alpaca", "plain")
IGNORE = -100
_SENTINEL = "\u2063TUNEFORGE_REPLY\u2063"


def builtin_template(name: str) -> str:
    return (resources.files("tuneforge.runner") / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def resolve_chat_template(tokenizer, choice: str = "auto") -> tuple[str, str]:
    """(template text, its name). 'auto' = the tokenizer's own, else chatml for base models."""
    if choice == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, str) and own.strip():
            return own, "tokenizer"
        return builtin_template("chatml"), "chatml (fallback: the tokenizer has no chat template)"
    if choice in BUILTIN_TEMPLATES:
        return builtin_template(choice), choice
    path = Path(choice)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    from ..errors import TuneforgeError

    raise TuneforgeError(
        f"model.chat_template '{choice}' is neither a built-in template nor an existing .jinja file",
        f"use auto, one of {', '.join(BUILTIN_TEMPLATES)}, or a path to a .jinja file",
    )


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


class ChatTokenizer:
    """Renders conversations with one template and builds exact assistant-only labels."""

    def __init__(self, tokenizer, template: str, max_length: int, train_on_prompt: bool = False,
                 last_turn_only: bool = False):
        self.tok = tokenizer
        self.template = template
        self.max_length = max_length
        self.train_on_prompt = train_on_prompt
        self.last_turn_only = last_turn_only
        self.end_of_turn = self._detect_end_of_turn()

    def render(self, messages: list[dict], tools=None, add_generation_prompt: bool = False) -> str:
        return self.tok.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=self.template,
        )

    def _detect_end_of_turn(self) -> str:
        """The text a template puts after a reply (e.g. '<|im_end|>', '<|eot_id|>', '</s>')."""
        text = self.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}])
        after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
        parts = after.split()
        return parts[0] if parts else ""

    def __call__(self, example: Example) -> Tokenized:
        if example.kind == "text":
            return self._text(example.text or "")
        messages = [m.to_openai() for m in example.messages]
        full = self.render(messages, tools=example.tools)
        spans = self._assistant_spans(messages, full, example.tools)
        if self.train_on_prompt:
            spans = [(0, spans[-1][1])]
        elif self.last_turn_only:
            spans = spans[-1:]
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        labels = [IGNORE] * len(ids)
        j = 0
        for i, (a, b) in enumerate(offsets):
            while j < len(spans) and spans[j][1] <= a:
                j += 1
            if j < len(spans) and a < spans[j][1] and b > spans[j][0] and b > a:
                labels[i] = ids[i]
        truncated = len(ids) > self.max_length
        if truncated:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            if all(x == IGNORE for x in labels):
                raise RowError(f"too long: no assistant tokens left after cutting to max_length {self.max_length}")
        return Tokenized(ids, labels, truncated)

    def _text(self, text: str) -> Tokenized:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if self.tok.eos_token_id is not None:
            ids = ids + [self.tok.eos_token_id]
        truncated = len(ids) > self.max_length
        ids = ids[: self.max_length]
        return Tokenized(ids, list(ids), truncated)

    def _assistant_spans(self, messages: list[dict], full: str, tools) -> list[tuple[int, int]]:
        """Character spans of each assistant reply + end-of-turn marker in the rendered text."""
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            prompt = self.render(messages[:i], tools=tools, add_generation_prompt=True)
            start = len(prompt) if full.startswith(prompt) else cursor
            content = msg["content"]
            if content.strip():
                pos = full.find(content, start)
                if pos < 0:
                    content = content.strip()
                    pos = full.find(content, start)
                if pos < 0:
                    raise RowError(f"the chat template does not reproduce assistant turn {i}'s text")
                end = pos + len(content)
                if self.end_of_turn and full.startswith(self.end_of_turn, end):
                    end += len(self.end_of_turn)
                spans.append((pos, end))
            else:  # a tool-call-only turn: everything the template renders for it
                upto = self.render(messages[: i + 1], tools=tools)
                if not full.startswith(prompt) or not full.startswith(upto):
                    raise RowError(f"the chat template cannot place assistant turn {i}'s tool call")
                spans.append((start, len(upto.rstrip())))
            cursor = spans[-1][1]
        if not spans:
            raise RowError("conversation has no assistant turn to learn from")
        return spans
