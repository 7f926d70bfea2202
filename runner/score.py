"""`tuneforge score RUN --data FILE`: a reward-model run (stage rm) scores preference pairs.

Each pair is tokenized exactly as training tokenized it (data.tokenize_for with the run's own
data settings: template, max_length, truncation), both replies go through the model, and the
reply the model scores higher should be the chosen one: the pairwise accuracy is the share of
pairs where it is. Rows that are not pairs, or that fail validation, are listed with their
row number and reason instead of being scored.

The run's weights, as stage rm writes them: method lora -> adapter/ (a peft SEQ_CLS adapter
whose modules_to_save carry the score head, on top of the recipe's base model, or with
model.from_run on the earlier run's result); method full or freeze -> model/ (a
sequence-classification model with one label). Both carry the tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import rundir
from .errors import ModelError, TuneforgeError

BATCH = 8


@dataclass
class PairScore:
    row: str  # "file.jsonl row 3"
    chosen: float
    rejected: float

    @property
    def margin(self) -> float:
        return self.chosen - self.rejected

    @property
    def correct(self) -> bool:
        return self.chosen > self.rejected


@dataclass
class ScoreReport:
    run: str
    data: str
    pairs: list[PairScore] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row, reason)

    @property
    def accuracy(self) -> float | None:
        return sum(p.correct for p in self.pairs) / len(self.pairs) if self.pairs else None

    @property
    def mean_margin(self) -> float | None:
        return sum(p.margin for p in self.pairs) / len(self.pairs) if self.pairs else None

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "data": self.data, "pairs": len(self.pairs), "accuracy": self.accuracy,
                "mean_margin": self.mean_margin,
                "rows": [{"row": p.row, "chosen": p.chosen, "rejected": p.rejected, "margin": p.margin}
                         for p in self.pairs],
                "skipped": [{"row": r, "reason": why} for r, why in self.skipped]}

    def lines(self) -> list[str]:
        width = max([len(p.row) for p in self.pairs] + [3])
        out = [f"{'row':<{width}}  {'chosen':>9}  {'rejected':>9}  {'margin':>9}"]
        out += [f"{p.row:<{width}}  {p.chosen:>+9.4f}  {p.rejected:>+9.4f}  {p.margin:>+9.4f}{'' if p.correct else '  ✗'}"
                for p in self.pairs]
        out += [f"skipped {r}: {why}" for r, why in self.skipped]
        n = len(self.pairs)
        if not n:
            return out + ["no pair could be scored"]
        out.append(f"pairwise accuracy {self.accuracy:.1%} ({sum(p.correct for p in self.pairs)} of {n} pairs), "
                   f"mean margin {self.mean_margin:+.4f}")
        return out


def _recipe(run: rundir.RunDir):
    """The run's recipe, read without requiring its data files to still exist."""
    from .recipe import recipe_from_dict

    data = yaml.safe_load(run.recipe.read_text(encoding="utf-8")) or {}
    return recipe_from_dict(data, base_dir=run.path, source=str(run.recipe))


def reward_run(run: rundir.RunDir):
    """The recipe of a finished reward-model run; TuneforgeError with the fix otherwise."""
    if not run.recipe.is_file():
        raise TuneforgeError(f"'{run.path}' is not a run directory (no recipe.yaml)", "list runs with: tuneforge runs")
    recipe = _recipe(run)
    if recipe.stage != "rm":
        raise TuneforgeError(
            f"run '{run.name}' is a stage '{recipe.stage}' run, not a reward model: only stage rm scores replies",
            f"chat with it instead (tuneforge chat {run.path}), or score with a run trained with stage: rm")
    if run.weights is None:
        raise TuneforgeError(f"run '{run.name}' has no final weights yet (state: {run.read_status().get('state', 'unknown')})",
                             "wait for it to finish, then score again")
    return recipe


def load_reward_model(run: rundir.RunDir, recipe, device: str = "cpu"):
    """(model, tokenizer) of a reward-model run, in eval mode: the one place score loads weights."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from . import model as model_mod

    weights = run.weights
    tok = model_mod.load_tokenizer(model_mod.ResolvedModel(str(weights), str(weights), "local"))
    m = recipe.model
    try:
        if (weights / "adapter_config.json").is_file():
            # the base it trained on (an earlier run's merged result for model.from_run) + its adapter
            model = model_mod.merge_adapter(model_mod.resolve_base(m), weights, m.revision, m.trust_remote_code)
            model.config.pad_token_id = tok.pad_token_id
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(weights), dtype=torch.float32,
                                                                       trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the reward model of run '{run.name}' from {weights}: {exc}",
                         "check that the run finished and its weights folder is complete") from None
    if model.config.num_labels != 1:
        raise TuneforgeError(f"{weights} holds a classifier with {model.config.num_labels} labels, not a reward model",
                             "score a run trained with stage: rm")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval(), tok


def _pairs(recipe, tok, data: Path, limit: int | None):
    """[(row, chosen ids, rejected ids)] and [(row, reason)] for the rows that cannot be scored."""
    from .data import tokenize_for
    from .data.template import Dropped, resolve_chat_template
    from .recipe import DatasetSpec

    spec = recipe.data.model_copy(update={
        "train": [DatasetSpec(path=str(data), max_samples=limit)], "eval": [], "eval_split": 0.0,
        "shuffle": False, "max_samples": None, "cache": False})
    choice = "auto" if isinstance(tok.chat_template, str) and tok.chat_template.strip() else recipe.model.chat_template
    template, _ = resolve_chat_template(tok, choice)
    prep = tokenize_for(spec, tok, template, recipe.seed, stage=None, sample=10**9)
    pairs, skipped, more = [], [], []
    for reason, where in prep.report.bad.items():  # bad rows, in reading or tokenizing (the first few per reason)
        skipped += [(w, f"{reason}" + (f" ({d})" if d else "")) for w, d in where]
        if prep.report.bad_totals[reason] > len(where):
            more.append((f"{prep.report.bad_totals[reason] - len(where)} more row(s)", reason))
    for ex, res in prep.outcomes:
        if isinstance(res, Dropped):  # (other row errors are in the report's bad rows above)
            skipped.append((ex.source, str(res)))
        elif ex.kind != "preference" and not isinstance(res, Exception):
            skipped.append((ex.source, f"a {ex.kind} row, not a chosen/rejected pair"))
        elif not isinstance(res, Exception):
            pairs.append((ex.source, res.input_ids, res.rejected_ids))
    skipped = sorted(skipped, key=_row_order) + more
    if not pairs:
        kinds = sorted({ex.kind for ex, _ in prep.outcomes})
        why = "; ".join(f"{row}: {reason}" for row, reason in skipped[:3])
        raise TuneforgeError(
            f"{data} holds no preference pairs to score ({prep.report.rows} row(s) read"
            + (f", {', '.join(kinds)} rows" if kinds else "") + (f"; {why}" if why else "") + ")",
            "give a file of pairs: {\"prompt\", \"chosen\", \"rejected\"} rows, or alpaca/sharegpt rows with "
            "chosen and rejected columns (tuneforge data check FILE --stage rm shows what it holds)")
    return pairs, skipped


def _row_order(item: tuple[str, str]) -> tuple[str, int]:
    """'pairs.jsonl line 12' sorts by file, then row number."""
    label, _, number = item[0].rpartition(" ")
    return (label, int(number)) if number.isdigit() else (item[0], 0)


def _scores(model, pad_id: int, seqs: list[list[int]], device: str) -> list[float]:
    """One reward per sequence: the model's output at its last token (right padding, batches of BATCH)."""
    import torch

    out: list[float] = []
    with torch.inference_mode():
        for b in range(0, len(seqs), BATCH):
            batch = seqs[b:b + BATCH]
            n = max(len(s) for s in batch)
            ids = torch.tensor([s + [pad_id] * (n - len(s)) for s in batch], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in batch], device=device)
            out += [float(v) for v in model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu()]
    return out


def score(run: rundir.RunDir, data: str | Path, limit: int | None = None, device: str = "cpu") -> ScoreReport:
    """Score every pair of `data` (the first `limit` rows) with the reward-model run."""
    data = Path(data).expanduser()
    if not data.exists():
        raise TuneforgeError(f"data file '{data}' does not exist", "check the --data path")
    recipe = reward_run(run)
    model, tok = load_reward_model(run, recipe, device)
    pairs, skipped = _pairs(recipe, tok, data, limit)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    seqs = [ids for _, chosen, rejected in pairs for ids in (chosen, rejected)]
    values = _scores(model, pad, seqs, device)
    report = ScoreReport(run.name, str(data), skipped=skipped)
    for i, (row, _, _) in enumerate(pairs):
        c, r = values[2 * i], values[2 * i + 1]
        if not (math.isfinite(c) and math.isfinite(r)):
            report.skipped.append((row, f"the model gave a non-finite score ({c}, {r})"))
            continue
        report.pairs.append(PairScore(row, c, r))
    return report
