"""What the Dataset step shows: detected format, validation report, rendered examples with the
trained tokens highlighted — computed with the runner's own data layer and chat template, so the
preview is exactly what training will see. Runs in a worker thread (loads a tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rich.text import Text

from tuneforge.runner.data import read_rows, tokenize_for
from tuneforge.runner.data.formats import detect_layout
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.recipe import DatasetSpec, DataSpec

from .workers import LOAD_LOCK, explain

TRAINED_STYLE = "bold black on green"


@dataclass
class DataPreview:
    path: str
    format: str | None = None
    kind: str | None = None  # conversation, preference, feedback or text
    report: str = ""
    examples: list[Text] = field(default_factory=list)
    template: str = ""
    problem: str | None = None
    fix: str | None = None
    usable: bool = False


def build_preview(path: str, fmt: str, model: str, chat_template: str, max_length: int,
                  train_on_prompt: bool, placeholders: dict[str, str] | None = None, max_samples: int | None = None,
                  n: int = 3, stage: str | None = None) -> DataPreview:
    """stage: refuse rows that stage cannot train on, as training would (None: any kind)."""
    out = DataPreview(path)
    try:
        spec = DatasetSpec(path=str(Path(path).expanduser().resolve()), format=fmt, placeholders=placeholders or {},
                           max_samples=max_samples)
        rows = read_rows(spec.path)
        out.format = fmt if fmt != "auto" else next((f for f in (detect_layout(r) for r in rows[:20]) if f), None)
        with LOAD_LOCK:  # one tokenizer user at a time (a cancelled preview may still be running)
            tok, template, out.template = _tokenizer(model, chat_template)
            data = DataSpec.model_construct(train=[spec], max_length=max_length, train_on_prompt=train_on_prompt, shuffle=False)
            prep = tokenize_for(data, tok, template, stage=stage, sample=n)
            out.kind = prep.kind
            report = prep.report
            report.used = prep.total - sum(1 for _, res in prep.outcomes if isinstance(res, Exception))
            out.report = report.summary()
            bad = report.bad_count / max(report.rows, 1)
            out.usable = report.used > 0 and bad <= 0.05
            if report.used <= 0:
                out.problem, out.fix = "no usable rows", "fix the rows listed in the report"
                return out
            if bad > 0.05:
                out.problem = f"{bad:.0%} of the rows are bad (training stops above 5%)"
                out.fix = "fix the rows listed in the report"
            for ex, res in prep.outcomes:
                if not isinstance(res, Exception):
                    out.examples.append(render_example(tok, prep.chat, ex, res))
    except TuneforgeError as exc:
        out.problem, out.fix = exc.message, exc.fix
        out.usable = False
    except Exception as exc:  # noqa: BLE001 - any file a user picks: say what broke, keep the app
        out.problem, out.usable = explain(exc, "reading the data failed"), False
    return out


@lru_cache(maxsize=4)
def _tokenizer(model: str, chat_template: str):
    from tuneforge.runner.data import tokenizer_for

    return tokenizer_for(model, chat_template)


def render_example(tok, chat, example, t=None) -> Text:
    """The example as the model sees it; trained tokens (labels != -100) highlighted.
    t: its Tokenized from data.tokenize_for (tokenized here when not given)."""
    t = t or chat(example)
    if example.kind == "text":
        text = example.text or ""
    else:  # a pair shows prompt + chosen (what input_ids/labels hold); its rejected reply follows below
        text = chat.render(example.openai_messages(example.chosen if example.kind == "preference" else None),
                           tools=example.tools)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    out = Text()
    cursor = 0
    for i, (a, b) in enumerate(enc["offset_mapping"][: len(t.labels)]):
        if a > cursor:
            out.append(text[cursor:a])
        a = max(a, cursor)  # byte-level BPE: several tokens can share one character's offsets
        if b <= a:
            continue
        style = TRAINED_STYLE if t.labels[i] != -100 else ""
        out.append(text[a:b], style=style)
        cursor = b
    if cursor < len(text):
        out.append(text[cursor:], style="dim strike" if t.truncated else "")
    if example.kind == "preference" and example.rejected is not None:
        out.append("\nrejected: ", style="bold red")
        out.append(example.rejected.content)
    elif example.kind == "feedback":
        out.append(f"\nlabel: {'desirable' if example.label else 'undesirable'}", style="bold")
    return out
