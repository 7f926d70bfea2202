"""Multiple-choice benchmarks through lm-eval-harness, offline from the benchmarks' own files.

MMLU, C-Eval and CMMLU are read from a folder in each benchmark's standard layout; tuneforge builds
the lm-eval task definitions in code (the same prompt, choices, description and first-n few-shot
sampler as lm-eval's own mmlu / ceval-valid / cmmlu yaml tasks, with `dataset_path: csv` on the
local files), so nothing touches the hub. Any other lm-eval task runs by its name (online, or
from the datasets cache). The model runs in memory (lm-eval's HFLM around our loaded model, the
adapter included); the base model is the same object with the adapter switched off.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TuneforgeError

# name -> (folder for the questions scored, how its files are named, csv header?, lm-eval's yaml folder)
LOCAL = {
    "mmlu": {"split": "test", "pattern": "{subject}_{split}.csv", "header": False, "lm_eval_dir": "mmlu/default",
             "question": "question", "answer": "answer", "answer_word": "Answer:",
             "layout": "mmlu/dev/<subject>_dev.csv and mmlu/test/<subject>_test.csv (the data/ folder of "
                       "hendrycks' data.tar: no header; question,A,B,C,D,answer)"},
    "ceval": {"split": "val", "pattern": "{subject}_{split}.csv", "header": True, "lm_eval_dir": "ceval",
              "question": "question", "answer": "answer", "answer_word": "答案：",
              "layout": "ceval/dev/<subject>_dev.csv and ceval/val/<subject>_val.csv (ceval-exam.zip: header "
                        "id,question,A,B,C,D,answer,...)"},
    "cmmlu": {"split": "test", "pattern": "{subject}.csv", "header": True, "lm_eval_dir": "cmmlu",
              "question": "Question", "answer": "Answer", "answer_word": "答案：",
              "layout": "cmmlu/dev/<subject>.csv and cmmlu/test/<subject>.csv (cmmlu_v1_0_1.zip: header "
                        ",Question,A,B,C,D,Answer)"},
}
MMLU_COLUMNS = ["question", "A", "B", "C", "D", "answer"]


@dataclass
class TaskRun:
    """One benchmark as asked for: the lm-eval task configs (or names) and how to report them."""

    name: str  # what the user wrote: mmlu, ceval, cmmlu_agronomy, hellaswag
    tasks: list  # dicts (local) or names (lm-eval's own)
    subjects: dict[str, str] = field(default_factory=dict)  # lm-eval task name -> subject


def bench_dir(given: str | None) -> Path | None:
    d = given or os.environ.get("TUNEFORGE_BENCH_DIR")
    return Path(d).expanduser() if d else None


def _split_name(name: str) -> tuple[str, str | None]:
    """'mmlu' -> (mmlu, None); 'mmlu_anatomy' / 'ceval-valid_accountant' -> (benchmark, subject)."""
    low = name.lower()
    for bench in LOCAL:
        for prefix in (f"{bench}-valid_", f"{bench}_", f"{bench}:"):
            if low.startswith(prefix):
                return bench, low[len(prefix):]
        if low == bench:
            return bench, None
    return name, None


def _lm_eval_descriptions(bench: str) -> dict[str, str]:
    """subject -> description, from lm-eval's installed yaml tasks (so prompts match lm-eval's)."""
    import yaml

    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / LOCAL[bench]["lm_eval_dir"]
    out = {}
    for f in folder.glob("*.yaml"):
        if f.name.startswith("_"):
            continue
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and doc.get("dataset_name") and doc.get("description"):
            out[str(doc["dataset_name"])] = str(doc["description"])
    return out


def _file(root: Path, bench: str, split: str, subject: str) -> Path:
    return root / bench / split / LOCAL[bench]["pattern"].format(subject=subject, split=split)


def _subjects(root: Path, bench: str) -> list[str]:
    spec = LOCAL[bench]
    folder = root / bench / spec["split"]
    suffix = f"_{spec['split']}.csv" if "{split}" in spec["pattern"] else ".csv"
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")) if folder.is_dir() else []


def local_task(root: Path, bench: str, subject: str, num_fewshot: int) -> dict:
    """The lm-eval task config for one subject of a local benchmark (mirrors lm-eval's yaml)."""
    spec = LOCAL[bench]
    files = {spec["split"]: _file(root, bench, spec["split"], subject)}
    if num_fewshot:
        files["dev"] = _file(root, bench, "dev", subject)
    for split, path in files.items():
        if not path.is_file():
            raise TuneforgeError(f"{bench} subject '{subject}' has no {split} file: {path} is missing",
                                 f"put the file there (layout: {spec['layout']}), or leave the subject out")
    desc = _lm_eval_descriptions(bench).get(subject) or (
        f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n")
    q, a = spec["question"], spec["answer"]
    kwargs: dict = {"data_files": {k: str(v) for k, v in files.items()}}
    if not spec["header"]:
        kwargs["column_names"] = MMLU_COLUMNS
    cfg = {
        "task": f"tf_{bench}_{subject}", "dataset_path": "csv", "dataset_kwargs": kwargs,
        "test_split": spec["split"], "output_type": "multiple_choice",
        "doc_to_text": "{{" + q + ".strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n" + spec["answer_word"],
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "{{['A', 'B', 'C', 'D'].index(" + a + ".strip())}}",
        "description": desc,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    if num_fewshot:
        cfg.update(fewshot_split="dev", fewshot_config={"sampler": "first_n"})
    return cfg


def plan(names: list[str], given_dir: str | None, num_fewshot: int) -> list[TaskRun]:
    """Each asked-for benchmark as lm-eval tasks; every problem raised before a model loads."""
    root = bench_dir(given_dir)
    runs = []
    others = []
    for name in names:
        bench, subject = _split_name(name)
        if bench in LOCAL and root is not None and (root / bench).is_dir():
            subjects = [subject] if subject else _subjects(root, bench)
            if not subjects:
                raise TuneforgeError(f"{root / bench} holds no {bench} questions",
                                     f"lay the files out as {LOCAL[bench]['layout']}")
            tasks = [local_task(root, bench, s, num_fewshot) for s in subjects]
            runs.append(TaskRun(name, tasks, {t["task"]: s for t, s in zip(tasks, subjects)}))
        elif bench in LOCAL and os.environ.get("HF_HUB_OFFLINE") == "1":
            where = f"{root / bench}" if root else "<bench_dir>/" + bench
            raise TuneforgeError(f"benchmark '{name}' is not on this machine ({where} does not exist) and the hub is "
                                 "offline (HF_HUB_OFFLINE=1)",
                                 f"download it and lay it out as {LOCAL[bench]['layout']} under --bench-dir "
                                 "(or $TUNEFORGE_BENCH_DIR); see docs/eval.md")
        else:
            others.append(name)
    if others:
        known = _lm_eval_task_names()
        for name in others:
            if name not in known:
                close = difflib.get_close_matches(name, [*LOCAL, *known], n=3, cutoff=0.6)
                hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
                raise TuneforgeError(f"unknown benchmark task '{name}'",
                                     f"{hint}offline: {', '.join(LOCAL)} from --bench-dir; any lm-eval task name "
                                     "online (python -m lm_eval ls tasks lists them)")
            runs.append(TaskRun(name, [name]))
    return runs


def _lm_eval_task_names() -> list[str]:
    """Every task, group and tag name lm-eval knows; indexing its ~15k yaml files takes ~10-30 s,
    so the list is kept in the user cache per lm-eval version."""
    import json
    from importlib.metadata import version

    from ..paths import cache_dir

    path = cache_dir() / f"lm-eval-{version('lm_eval')}-tasks.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    from lm_eval.tasks import TaskManager

    names = list(TaskManager().all_tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(names), encoding="utf-8")
    os.replace(tmp, path)
    return names


def _quiet() -> None:
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def _primary(sample: dict) -> tuple[str, float] | None:
    names = sample.get("metrics") or [k for k in ("acc", "exact_match") if k in sample]
    for m in ["acc", *names]:
        v = sample.get(m)
        if isinstance(v, (int, float, bool)):
            return m, float(v)
    return None


def run(lm, task_runs: list[TaskRun], num_fewshot: int, limit: int | None) -> dict[str, dict]:
    """{benchmark: {"metric", "scores": per-question 0/1 list, "subjects": {subject: accuracy}}}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    _quiet()
    out: dict[str, dict] = {}
    local_only = all(isinstance(t, dict) for r in task_runs for t in r.tasks)
    manager = TaskManager(include_defaults=not local_only)
    for tr in task_runs:
        res = lm_eval.simple_evaluate(model=lm, tasks=list(tr.tasks), num_fewshot=num_fewshot, limit=limit,
                                      task_manager=manager, log_samples=True, bootstrap_iters=0,
                                      random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
        scores: list[float] = []
        subjects: dict[str, float] = {}
        metric = "acc"
        for task, samples in sorted(res.get("samples", {}).items()):
            vals = []
            for s in sorted(samples, key=lambda s: s["doc_id"]):
                got = _primary(s)
                if got is not None:
                    metric, v = got
                    vals.append(v)
            scores += vals
            if vals:
                subjects[tr.subjects.get(task, task)] = sum(vals) / len(vals)
        out[tr.name] = {"metric": metric, "scores": scores, "subjects": subjects, "num_fewshot": num_fewshot}
    return out


def hflm(model, tokenizer, batch_size: int, device: str):
    """lm-eval's HF wrapper around a model already in memory (adapter included)."""
    from lm_eval.models.huggingface import HFLM

    _quiet()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
