"""Where data becomes token ids: chat template rendering and exact loss masks.

The text is rendered once with the tokenizer's own chat template (the one saved with the run and
used again by chat and export) and tokenized once, in batches. Trained tokens are found by
character spans: for each assistant turn, from the end of the prompt the template renders before
it (with the generation prompt) to the end of its visible content plus the end-of-turn marker.
This needs no `{% generation %}` tags, and it survives templates that rewrite earlier turns
(Qwen3 strips `<think>` from replies before the last user turn: the span then covers what the
template kept).

Rows with a prompt and judged replies (preference pairs, feedback) are tokenized in two parts: the
prompt once and each reply after it, so the prompt's ids are an exact common prefix of both
sequences (`prompt_len`) and the trainers can encode it once per pair. Such rows are truncated by
cutting the prompt from the left (its latest turns stay) and a reply only when it alone does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .formats import SAME_AFTER_CUT, TEMPLATE, TOO_LONG, RowError
from .schema import Example, Message

BUILTIN_TEMPLATES = ("chatml", "llama3", "alpaca", "plain")
TRUNCATION = ("keep_start", "keep_end", "drop")
IGNORE = -100
# Truncation reasons (the report's categories), one per rule.
CUT_END = "cut at the end (keep_start)"
CUT_START = "cut from the start (keep_end)"
PROMPT_CUT = "prompt cut from the left"
REPLY_CUT = "reply cut at its end (too long to fit whole)"
CUTS = ("", CUT_END, CUT_START, PROMPT_CUT, REPLY_CUT)  # codes in the cache
_SENTINEL = "\u2063TUNEFORGE_REPLY\u2063"


def builtin_template(name: str) -> str:
    return (resources.files("tuneforge.runner") / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def resolve_chat_template(tokenizer, choice: str = "auto", tool_format: str = "auto") -> tuple[str, str]:
    """(template text, its name). 'auto' = the tokenizer's own, else chatml for base models; tools and
    tool calls in `tool_format` when the template cannot render them (data/tool_format.py)."""
    from .tool_format import with_tool_format

    return with_tool_format(*_base_chat_template(tokenizer, choice), tool_format, tokenizer)


def _base_chat_template(tokenizer, choice: str) -> tuple[str, str]:
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
    """One tokenized row. For preference rows input_ids/labels hold prompt+chosen and
    rejected_ids/rejected_labels prompt+rejected; feedback rows carry their label. For both,
    `prompt_len` leading ids are the prompt, the same ids in both sequences of a pair."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    rejected_ids: list[int] | None = None
    rejected_labels: list[int] | None = None
    label: bool | None = None
    source: str = ""
    prompt_len: int | None = None
    cut: str = ""  # the truncation rule applied (one of CUTS), "" when whole
    margin: float | None = None  # preference: rm.margin_column's value

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _jinja_renderer(tokenizer):
    """The renderer apply_chat_template uses, without its per-call overhead (falls back to it)."""
    try:
        from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template
    except ImportError:  # pragma: no cover - older/newer transformers
        return None
    specials = dict(tokenizer.special_tokens_map)

    def render(messages, template, tools=None, add_generation_prompt=False) -> str:
        out, _ = render_jinja_template(
            conversations=[_normalize_chat_messages(messages)], tools=tools, chat_template=template,
            add_generation_prompt=add_generation_prompt, **specials,
        )
        return out[0]

    return render


class ChatTokenizer:
    """Renders rows with one template and builds exact assistant-only labels, in batches."""

    def __init__(self, tokenizer, template: str, max_length: int, train_on_prompt: bool = False,
                 last_turn_only: bool = False, truncation: str = "keep_start"):
        if truncation not in TRUNCATION:
            raise ValueError(f"truncation must be one of {TRUNCATION}")
        self.tok = tokenizer
        self.template = template
        self.max_length = max_length
        self.train_on_prompt = train_on_prompt
        self.last_turn_only = last_turn_only
        self.truncation = truncation
        self._fast = _jinja_renderer(tokenizer)
        self.end_of_turn = self._detect_end_of_turn()

    # -- rendering ---------------------------------------------------------------------------

    def render(self, messages: list[dict], tools=None, add_generation_prompt: bool = False) -> str:
        try:
            if self._fast is not None:
                return self._fast(messages, self.template, tools, add_generation_prompt)
            return self.tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                                add_generation_prompt=add_generation_prompt, chat_template=self.template)
        except Exception as exc:  # noqa: BLE001 - templates raise_exception() on rows they refuse
            raise RowError(TEMPLATE, f"the chat template refused the row: {exc}") from None

    def _detect_end_of_turn(self) -> str:
        """The text a template puts right after a reply (e.g. '<|im_end|>', '<|eot_id|>', '</s>')."""
        try:
            text = self.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}])
        except RowError:
            return ""
        after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
        parts = after.split()
        return parts[0] if parts else ""

    def assistant_spans(self, messages: list[dict], full: str, tools=None) -> list[tuple[int, int]]:
        """Character spans of each assistant turn (content + end-of-turn marker) in `full`."""
        return [(start, end) for _, start, end in self._turn_spans(messages, full, tools)]

    def _turn_spans(self, messages: list[dict], full: str, tools=None) -> list[tuple[int, int, int]]:
        """(prompt end, start, end) per assistant turn: where the prompt before it ends (the text the
        template renders with the generation header, when that is a prefix of `full`; else the span's
        start) and the character span trained."""
        spans: list[tuple[int, int, int]] = []
        cursor = 0
        eot = self.end_of_turn
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            try:
                prompt = self.render(messages[:i], tools=tools, add_generation_prompt=True)
            except RowError:  # a template that refuses a conversation ending in a user turn
                prompt = None
            # The reply starts where the prompt (with the generation header) ends, when the template
            # renders that prompt as a prefix of the whole; otherwise at its own text, found after
            # the previous reply (never earlier: prompt text is not trained by accident).
            prefix_ok = prompt is not None and full.startswith(prompt) and len(prompt) >= cursor
            start = len(prompt) if prefix_ok else cursor
            while start < len(full) and full[start].isspace():
                start += 1
            content = msg.get("content") or ""
            end = start
            if content.strip():
                pos = _find_content(full, content, start)
                if pos is None:
                    raise RowError(TEMPLATE, f"the chat template does not reproduce assistant turn {i}'s text")
                pos, length = pos
                start = start if prefix_ok else pos
                end = pos + length
            elif not prefix_ok:
                raise RowError(TEMPLATE, f"the chat template cannot place assistant turn {i}'s tool call")
            if msg.get("tool_calls"):
                nxt = full.find(eot, end) if eot else -1
                if nxt < 0 or not any(c["function"]["name"] in full[end:nxt] for c in msg["tool_calls"]):
                    raise RowError(TEMPLATE, f"the chat template does not render assistant turn {i}'s tool call")
                end = nxt
            if eot and full.startswith(eot, end):
                end += len(eot)
            spans.append((len(prompt) if prefix_ok else start, start, end))
            cursor = end
        if not spans:
            raise RowError("empty assistant turn", "the conversation has no assistant turn to learn from")
        return spans

    # -- tokenizing --------------------------------------------------------------------------

    def _plan(self, ex: Example) -> tuple[str, list[tuple[int, int]]]:
        """(rendered text, trained character spans) of one conversation."""
        messages = ex.openai_messages()
        full = self.render(messages, tools=ex.tools)
        spans = self.assistant_spans(messages, full, ex.tools)
        if self.train_on_prompt:
            spans = [(0, spans[-1][1])]
        elif self.last_turn_only:
            spans = spans[-1:]
        return full, spans

    def _split_plan(self, ex: Example, replies: list[Message | None]) -> list[tuple[str, list[tuple[int, int]] | None]]:
        """[(prompt text, None), (reply text, its span within it), ...]: the shared prompt (the longest
        common start of the renderings, up to where each reply's generation prompt ends) and, after it,
        each reply's own text. Only the last reply is trained."""
        fulls, ends, spans = [], [], []
        for reply in replies:
            messages = ex.openai_messages(reply)
            full = self.render(messages, tools=ex.tools)
            end, start, stop = self._turn_spans(messages, full, ex.tools)[-1]
            fulls.append(full)
            ends.append(end)
            spans.append((start, stop))
        cut = min(ends)
        for other in fulls[1:]:
            if other[:cut] != fulls[0][:cut]:  # a template that renders the prompt differently per reply
                cut = _common_prefix(fulls[0][:cut], other)
        return [(fulls[0][:cut], None)] + [(f[cut:], [(a - cut, b - cut)]) for f, (a, b) in zip(fulls, spans)]

    def encode_many(self, examples: list[Example]) -> list[Tokenized | RowError]:
        """Tokenize a batch: one rendering per row, one batched tokenizer call for all of them."""
        plans: list[Any] = []  # per example: RowError | [(text, spans)]: 1 item, or a prompt + 1 or 2 replies
        for ex in examples:
            try:
                if ex.kind == "text":
                    plans.append([(ex.text or "", None)])
                elif ex.kind == "preference":
                    plans.append(self._split_plan(ex, [ex.chosen, ex.rejected]))
                elif ex.kind == "feedback":
                    plans.append(self._split_plan(ex, [None]))
                else:
                    plans.append([self._plan(ex)])
            except RowError as exc:
                plans.append(exc)
        texts = [text for p in plans if not isinstance(p, RowError) for text, _ in p]
        it = iter(self._encode(texts))
        out: list[Tokenized | RowError] = []
        for ex, plan in zip(examples, plans):
            if isinstance(plan, RowError):
                out.append(plan)
                continue
            parts = [(*next(it), spans) for _, spans in plan]
            try:
                out.append(self._finish_split(ex, parts) if len(parts) > 1 else self._finish(ex, parts[0]))
            except RowError as exc:
                out.append(exc)
        return out

    def _encode(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, character offsets) per text: the Rust tokenizer directly when there is one
        (same ids as tokenizer(text, add_special_tokens=False), without per-row Python conversion)."""
        if not texts:
            return []
        backend = getattr(self.tok, "_tokenizer", None) if getattr(self.tok, "is_fast", False) else None
        if backend is not None:
            return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        return list(zip(enc["input_ids"], enc["offset_mapping"]))

    def encode_documents(self, texts: list[str]) -> list[list[int]]:
        """Plain text without a template, EOS after each document (pt.concatenate's stream)."""
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        return [list(ids) + eos for ids, _ in self._encode(texts)]

    def __call__(self, example: Example) -> Tokenized:
        res = self.encode_many([example])[0]
        if isinstance(res, RowError):
            raise res
        return res

    def _finish(self, ex: Example, part) -> Tokenized:
        ids, offs, spans = part
        if spans is None:  # plain text: every token trained, EOS appended so documents end
            ids = list(ids) + ([self.tok.eos_token_id] if self.tok.eos_token_id is not None else [])
            labels = list(ids)
        else:
            labels = _labels(ids, offs, spans)
        ids, labels, cut = self._truncate(list(ids), labels)
        return Tokenized(ids, labels, bool(cut), source=ex.source, label=ex.label, cut=cut)

    def _finish_split(self, ex: Example, parts) -> Tokenized:
        """Prompt + reply(s) → one Tokenized; the pair rule cuts the prompt before any reply."""
        (prompt, _, _), *replies = parts
        replies = [(list(ids), _labels(ids, offs, spans)) for ids, offs, spans in replies]
        prompt, replies, cut = self._fit(list(prompt), replies)
        n = len(prompt)
        for ids, labels in replies:
            if all(x == IGNORE for x in labels):
                raise RowError(TOO_LONG, f"no reply tokens left after cutting to max_length {self.max_length}")
        (ids, labels), *rest = replies
        t = Tokenized(prompt + ids, [IGNORE] * n + labels, bool(cut), source=ex.source, label=ex.label,
                      prompt_len=n, cut=cut, margin=ex.margin)
        if rest:
            if rest[0][0] == ids:
                raise RowError(SAME_AFTER_CUT, f"both replies are the same {len(ids)} tokens after cutting to max_length {self.max_length}")
            t.rejected_ids, t.rejected_labels = prompt + rest[0][0], [IGNORE] * n + rest[0][1]
        return t

    def _fit(self, prompt: list[int], replies: list[tuple[list[int], list[int]]]):
        """The pair rule: whole replies, the prompt cut from the left (its latest turns kept, a leading
        BOS too); a reply is cut (keeping its start) only when it does not fit beside the prompt's
        last max_length/8 tokens (so a reply never crowds out the question it answers)."""
        m, lp = self.max_length, len(prompt)
        longest = max(len(ids) for ids, _ in replies)
        if lp + longest <= m:
            return prompt, replies, ""
        if self.truncation == "drop":
            raise Dropped()
        room = m - min(lp, max(1, m // 8))
        cut = REPLY_CUT if longest > room else PROMPT_CUT
        replies = [(ids[:room], labels[:room]) for ids, labels in replies]
        keep = min(lp, m - max(len(ids) for ids, _ in replies))
        bos = self.tok.bos_token_id  # a true BOS (once, at the start; not ChatML's <|im_start|>) stays
        if keep >= 2 and bos is not None and prompt[0] == bos and prompt.count(bos) == 1:
            prompt = prompt[:1] + prompt[lp - keep + 1:]
        else:
            prompt = prompt[lp - keep:]
        return prompt, replies, cut

    def _truncate(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int], str]:
        n, m = len(ids), self.max_length
        if n <= m:
            return ids, labels, ""
        if self.truncation == "drop":
            raise Dropped()
        if self.truncation == "keep_end":
            trained = [i for i, x in enumerate(labels) if x != IGNORE]
            last_start = _last_run_start(labels)
            if trained and n - last_start > m:
                raise RowError(TOO_LONG, f"the last reply alone ({n - last_start} tokens) is longer than max_length {m}")
            return ids[n - m:], labels[n - m:], CUT_START
        ids, labels = ids[:m], labels[:m]
        if all(x == IGNORE for x in labels):
            raise RowError(TOO_LONG, f"no assistant tokens left after cutting {n} tokens to max_length {m}")
        return ids, labels, CUT_END


class Dropped(RowError):
    """A row left out by `truncation: drop` (counted apart from bad rows)."""

    def __init__(self):
        super().__init__("longer than max_length (truncation: drop)")


def _find_content(full: str, content: str, start: int) -> tuple[int, int] | None:
    """Where the template put a reply's visible text: as is, stripped, or after a `</think>` block."""
    candidates = [content, content.strip()]
    if "</think>" in content:
        candidates.append(content.split("</think>")[-1].strip())
    for c in candidates:
        if c:
            pos = full.find(c, start)
            if pos >= 0:
                return pos, len(c)
    return None


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _labels(ids, offsets, spans) -> list[int]:
    """Token ids inside the spans (a token counts when it overlaps one), IGNORE elsewhere."""
    labels = [IGNORE] * len(ids)
    j = 0
    for i, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        if j == len(spans):
            break
        if b > spans[j][0]:
            labels[i] = ids[i]
    return labels


def _last_run_start(labels: list[int]) -> int:
    """Index where the last run of trained tokens starts (the last reply)."""
    i = len(labels) - 1
    while i >= 0 and labels[i] == IGNORE:
        i -= 1
    while i > 0 and labels[i - 1] != IGNORE:
        i -= 1
    return max(i, 0)
