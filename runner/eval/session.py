"""One evaluation: check everything, load the model once, score the tuned and the base model on the
same items, write results.json (after each step, so a crash keeps what was done) and predictions.

For a LoRA run the base model is the same weights with the adapter switched off (no extra memory);
for a fully fine-tuned run it is loaded beside it; a bare model reference is scored alone.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..errors import TuneforgeError
from ..rundir import now_iso, write_json_atomic
from . import deps, items as items_mod, results
from .spec import EvalSpec


@dataclass
class Plan:
    """What an eval will do, checked before any model loads (mistakes cost no load time)."""

    target: str  # a run directory or a model reference
    run_path: Path | None
    spec: EvalSpec
    out: Path
    items: dict[str, list] = field(default_factory=dict)
    bench: list = field(default_factory=list)
    data_opts: dict = field(default_factory=dict)


@dataclass
class View:
    name: str  # "tuned", "base" or "model"
    model: object
    tokenizer: object
    device: str
    adapter_off: bool = False

    def active(self):
        return self.model.disable_adapter() if self.adapter_off else contextlib.nullcontext()


def plan(target: str, spec: EvalSpec, data: list[str] | None = None, out: str | Path | None = None,
         runs_dir: str = "runs") -> Plan:
    """Resolve the target, read the data and the benchmarks, and check the extras: every mistake here."""
    from ..chat import resolve_target

    ref = resolve_target(target, runs_dir)
    run_path = Path(ref) if (Path(ref) / "recipe.yaml").is_file() else None
    deps.require(spec.modes)
    data_opts = (_run_recipe(run_path).get("data") or {}) if run_path else {}
    paths = list(data or spec.data or (run_eval_data(run_path) if run_path else []))
    p = Plan(ref, run_path, spec, Path(out) if out else Path(), data_opts=data_opts)
    if {"loss", "generate"} & set(spec.modes):
        p.items = items_mod.read_items(paths, spec.max_samples)
        if "generate" in spec.modes:
            items_mod.require_references(p.items)
    elif data:
        raise TuneforgeError("--data was given but no mode uses it", "add --mode loss,generate, or leave out --data")
    if "bench" in spec.modes:
        from . import bench

        p.bench = bench.plan(spec.tasks, spec.bench_dir, spec.num_fewshot)
    if out is None:
        p.out = results.new_dir(results.eval_root(run_path) if run_path else Path("eval"))
    else:
        p.out.mkdir(parents=True, exist_ok=True)
    return p


def _run_recipe(run_path: Path) -> dict:
    return yaml.safe_load((Path(run_path) / "recipe.yaml").read_text(encoding="utf-8")) or {}


def run_eval_data(run_path: Path) -> list[str]:
    """What a run is scored on without --data: its recipe's eval.data, else its data.eval files."""
    recipe = _run_recipe(run_path)
    evals = (recipe.get("data") or {}).get("eval") or []
    return list((recipe.get("eval") or {}).get("data") or []) or [
        d["path"] for d in evals if isinstance(d, dict) and d.get("path")]


def views(p: Plan) -> list[View]:
    """The tuned model (and the base, unless spec.base is off) ready to score."""
    from .. import chat

    engine = chat.load(p.target, warmup=False)
    tuned = View("tuned" if p.run_path else "model", engine.model, engine.tokenizer, engine.device)
    if not (p.spec.base and p.run_path and engine.can_compare):
        return [tuned]
    base = engine.base()
    return [tuned, View("base", base.model, base.tokenizer, base.device, adapter_off=base.adapter_off)]


def run(p: Plan, say: Callable[[str], None] = print, loaded: list[View] | None = None) -> dict:
    """Score every view in every mode; returns the results dict (also in p.out/results.json)."""
    doc = {"target": p.target, "run": str(p.run_path) if p.run_path else None, "started_at": now_iso(),
           "state": "running", "spec": p.spec.model_dump(mode="json"), "rows": [], "timings": {}, "subjects": {}}
    write = lambda: write_json_atomic(p.out / results.RESULTS, doc)  # noqa: E731
    write()
    try:
        vs = loaded or views(p)
        raw: dict[str, dict] = {v.name: {} for v in vs}
        for v in vs:
            for mode in p.spec.modes:
                t0 = time.perf_counter()
                say(f"{v.name}: {mode} ...")
                with v.active():
                    raw[v.name].update(_score(mode, v, p, say))
                doc["timings"][f"{v.name}.{mode}"] = round(time.perf_counter() - t0, 2)
                doc["rows"] = _rows(raw, p)
                write()
        first = vs[0].name
        doc["subjects"] = {s: {v: raw[v][s]["subjects"] for v in raw if s in raw[v]}
                           for s in raw[first] if raw[first][s].get("subjects")}
        doc.update(state="finished", ended_at=now_iso(), headline=results.headline(doc["rows"]))
    except BaseException as exc:
        doc.update(state="failed", ended_at=now_iso(), error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        write()
    return doc


def _score(mode: str, v: View, p: Plan, say: Callable[[str], None]) -> dict[str, dict]:
    """{section: {"scored": {metric: Scored}, "n": rows, ...}} of one view in one mode."""
    from . import metrics

    out: dict[str, dict] = {}
    if mode == "loss":
        from . import loss

        chat = loss.chat_tokenizer(v.tokenizer, p.data_opts)
        for path, its in p.items.items():
            rows = loss.tokenize(its, chat)
            if len(rows) < len(its):
                say(f"{path}: {len(its) - len(rows)} row(s) the chat template refuses are left out of the loss")
            per = loss.row_losses(v.model, rows, p.spec.batch_size, v.device)
            s = metrics.ratio_scored([r.nll for r in per], [r.tokens for r in per])
            out[f"loss · {Path(path).name}"] = {"scored": {"loss": s}, "n": len(per),
                                                 "tokens": int(sum(r.tokens for r in per))}
    elif mode == "generate":
        from . import generate as gen

        writer = gen.PredictionWriter(p.out / f"predictions-{v.name}.jsonl")
        for path, its in p.items.items():
            prompts = [gen.prompt_ids(v.tokenizer, it.prompt) for it in its]

            def keep(done, its=its, path=path):
                writer.write([{"file": path, "row": its[i].source, "prompt": its[i].prompt[-1]["content"],
                               "reference": its[i].reference, "prediction": text} for i, text in done])

            t0 = time.perf_counter()
            preds = gen.generate(v.model, v.tokenizer, prompts, p.spec.max_new_tokens, p.spec.batch_size, v.device, keep)
            secs = time.perf_counter() - t0
            out[f"generate · {Path(path).name}"] = {
                "scored": metrics.generation_scores(preds, [it.reference for it in its]), "n": len(its),
                "rows_per_s": round(len(its) / secs, 3) if secs > 0 else None}
    elif mode == "bench":
        from . import bench

        lm = bench.hflm(v.model, v.tokenizer, p.spec.batch_size, v.device)
        for name, res in bench.run(lm, p.bench, p.spec.num_fewshot, p.spec.max_samples).items():
            out[f"{name} ({p.spec.num_fewshot}-shot)"] = {
                "scored": {res["metric"]: metrics.mean_scored([100.0 * x for x in res["scores"]])},
                "n": len(res["scores"]), "subjects": res["subjects"]}
    return out


def _rows(raw: dict[str, dict], p: Plan) -> list[dict]:
    """One row per (section, metric): tuned, base, difference with its paired 95% interval."""
    from . import metrics

    first = next(iter(raw))
    rows = []
    for section, got in raw[first].items():
        for metric, scored in got["scored"].items():
            row = {"section": section, "metric": metric, "n": got["n"], first: scored.value(),
                   "higher_is_better": metric not in results.LOWER_IS_BETTER}
            row["tuned"] = row.pop(first)
            base = raw.get("base", {}).get(section)
            if base is not None:
                b = base["scored"][metric]
                row["base"] = b.value()
                row["diff"] = row["tuned"] - row["base"]
                row["ci95"] = list(metrics.paired_interval(scored, b))
            else:
                row["ci95_score"] = list(metrics.interval(scored))
            if metric == "loss":
                rows.append(row)
                rows.append(_perplexity(row))
                continue
            rows.append(row)
    return rows


def _perplexity(loss_row: dict) -> dict:
    import math

    row = {k: v for k, v in loss_row.items() if k not in ("ci95", "ci95_score")}
    row["metric"] = "perplexity"
    for k in ("tuned", "base"):
        if row.get(k) is not None:
            row[k] = math.exp(min(row[k], 700))
    if "base" in row:
        row["diff"] = row["tuned"] - row["base"]
    return row
