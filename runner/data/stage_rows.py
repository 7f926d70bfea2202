"""Which rows each stage trains on, and the two reshapings a stage may ask for.

`keep_kinds` reports rows of the wrong kind one by one (a whole dataset of them is a DataError with
the stage's fix); `unpair_rows` turns pairs into KTO feedback rows (kto.unpair); `concatenate_blocks`
joins pre-training documents into max_length blocks (pt.concatenate). `stage_options(recipe)` gives
`tokenize_for` the keywords a recipe's stage asks for.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..recipe_stages import STAGE_KINDS
from .formats import WRONG_KIND
from .report import DataReport
from .schema import Example
from .template import ChatTokenizer, Tokenized

PAIR_STAGES = ("rm", "dpo", "orpo", "simpo")


def allowed_kinds(stage: str | None, unpair: bool = False) -> set[str] | None:
    """The row kinds a stage trains on (None: any, for previews); kto.unpair adds pairs."""
    if stage is None:
        return None
    kinds = set(STAGE_KINDS.get(stage, ("conversation", "text")))
    return kinds | {"preference"} if stage == "kto" and unpair else kinds


def kind_fix(stage: str, found: str) -> str:
    """What to do when a dataset holds only rows of a kind the stage cannot train on."""
    if stage == "kto" and found == "preference":
        return "set kto.unpair: true (each pair becomes a desirable and an undesirable row), or stage: dpo"
    if stage == "kto":
        return "give rows judged with a true/false label (a 'label' or 'kto_tag' column), or pairs with kto.unpair: true"
    if stage == "pt":
        return ('stage pt trains on plain text: use {"text": ...} rows or a .txt file (or format: text with '
                "columns: {text: <column>} in the dataset entry); for conversations use stage: sft")
    if stage in PAIR_STAGES and found == "feedback":
        return f"stage {stage} needs chosen/rejected pairs; for rows with a true/false label use stage: kto"
    if stage in PAIR_STAGES:
        return (f"stage {stage} needs chosen/rejected pairs (rows with 'chosen' and 'rejected' replies, e.g. "
                "dpo_en_demo.json, or a registry entry with ranking: true); for conversations use stage: sft")
    if found == "preference":
        return "set kind: conversation in the dataset entry to train on the chosen replies, or stage: dpo"
    return "use stage: kto for labelled replies, or set kind: conversation in the dataset entry to train on every reply"


def keep_kinds(examples: list[Example], label: str, stage: str | None, report: DataReport,
               unpair: bool = False) -> list[Example]:
    """The rows the stage trains on; the others are bad rows (file, row, reason). A dataset holding
    only wrong rows is a mistake in the recipe, not in the rows: a DataError with the fix."""
    allowed = allowed_kinds(stage, unpair)
    if allowed is None:
        return examples
    keep = [ex for ex in examples if ex.kind in allowed]
    wrong = [ex for ex in examples if ex.kind not in allowed]
    want = " or ".join(sorted(allowed))
    if wrong and not keep:
        found = sorted({ex.kind for ex in wrong})
        raise DataError(f"stage '{stage}' trains on {want} rows, but {label} holds only {', '.join(found)} rows "
                        f"(the first: {wrong[0].source})", kind_fix(stage, found[0]))
    for ex in wrong:
        hint = " (kto.unpair: true would use it)" if stage == "kto" and ex.kind == "preference" else ""
        report.add_bad(WRONG_KIND, ex.source, f"a {ex.kind} row; stage {stage} trains on {want} rows{hint}")
    return keep


def unpair_rows(examples: list[Example], report: DataReport) -> list[Example]:
    """kto.unpair: each preference pair becomes a desirable (chosen) and an undesirable (rejected) row."""
    out = []
    for ex in examples:
        if ex.kind != "preference":
            out.append(ex)
            continue
        report.unpaired += 1
        for reply, label, which in ((ex.chosen, True, "chosen"), (ex.rejected, False, "rejected")):
            out.append(Example("feedback", ex.messages + [reply], tools=ex.tools, label=label,
                               source=f"{ex.source} ({which})"))
    return out


def stage_options(recipe) -> dict[str, Any]:
    """The tokenize_for keywords a recipe's stage asks for (kto.unpair, pt.concatenate, rm.margin_column)."""
    return {"unpair": recipe.stage == "kto" and recipe.kto.unpair,
            "concatenate": recipe.stage == "pt" and recipe.pt.concatenate,
            "margin_column": recipe.rm.margin_column if recipe.stage == "rm" else None}


def concatenate_blocks(docs: list[Example], chat: ChatTokenizer, report: DataReport) -> list[Tokenized]:
    """pt.concatenate: every document's ids plus EOS, joined into one stream cut into max_length
    blocks (labels = ids; the last block may be shorter; nothing is dropped)."""
    m = chat.max_length
    stream: list[int] = []
    starts: list[tuple[int, str]] = []  # (offset in the stream, the document starting there)
    for ex, ids in zip(docs, chat.encode_documents([ex.text or "" for ex in docs])):
        starts.append((len(stream), ex.source))
        stream += ids
    report.documents += len(docs)
    blocks = []
    j = 0
    for k, at in enumerate(range(0, len(stream), m), 1):
        while j + 1 < len(starts) and starts[j + 1][0] <= at:
            j += 1
        ids = stream[at:at + m]
        blocks.append(Tokenized(ids, list(ids), source=f"block {k} (from {starts[j][1]})"))
    report.blocks += len(blocks)
    return blocks
