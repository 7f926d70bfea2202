"""`tuneforge eval` as a user runs it: a tiny trained run (with the recipe's eval: block), the table
and results.json, `runs`/`plot`, bad input (exit 2), a crash that keeps its predictions, and the
quickstart run scored against its base on identity questions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, shared


@pytest.fixture(scope="module")
def eval_run(tiny_model_dir, tmp_path_factory):
    """A tiny LoRA run trained with `eval: {every_steps: 3, during_training: end}`."""
    folder = tmp_path_factory.mktemp("eval-run")
    rows = json.loads(shared("alpaca_en_demo.json").read_text(encoding="utf-8"))
    (folder / "rows.json").write_text(json.dumps(rows[:200]), encoding="utf-8")
    recipe = {
        "name": "tiny", "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": [{"path": "rows.json", "max_samples": 24}], "max_length": 96},
        "train": {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "learning_rate": 5e-3, "warmup_ratio": 0.0},
        "precision": "fp32", "device": "cpu", "output": {"runs_dir": str(folder / "runs")},
        "eval": {"data": ["rows.json"], "max_samples": 4, "max_new_tokens": 8, "every_steps": 3, "during_training": "end"},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "tuneforge.runner.cli", "train", str(folder / "tiny.yaml"), "--progress", "plain"],
                          capture_output=True, text=True, timeout=600, cwd=folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return folder / "runs" / "tiny"


def _results(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "eval").glob("*/results.json"))]


def test_the_eval_block_scores_during_and_after_training_and_plot_draws_it(eval_run, run_cli):
    points = [json.loads(line) for line in (eval_run / "eval" / "during_training.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [3, 6]
    assert all(p["loss"] > 0 and "exact_match" in p for p in points)
    end = _results(eval_run)[0]
    assert end["state"] == "finished"
    loss_row = next(r for r in end["rows"] if r["metric"] == "loss")
    # the model in memory at the end is the model of the last step: same loss as the step-6 point
    assert loss_row["tuned"] == pytest.approx(points[-1]["loss"], rel=1e-4)
    assert loss_row["base"] != loss_row["tuned"] and loss_row["diff"] == pytest.approx(loss_row["tuned"] - loss_row["base"])
    out = run_cli("plot", str(eval_run))
    assert out.returncode == 0, out.stderr
    assert (eval_run / "loss.png").stat().st_size > 0


def test_eval_prints_base_and_tuned_side_by_side_and_runs_shows_the_headline(eval_run, run_cli, tmp_path):
    before = len(_results(eval_run))
    out = run_cli("eval", str(eval_run), "--data", str(eval_run.parent.parent / "rows.json"), "--max-samples", "6",
                  "--max-new-tokens", "8", "--batch-size", "4")
    assert out.returncode == 0, out.stderr
    for word in ("tuned", "base", "diff", "95% CI", "loss", "perplexity", "bleu4", "rougeL", "exact_match"):
        assert word in out.stdout
    results = _results(eval_run)
    assert len(results) == before + 1
    doc = results[-1]
    assert {r["metric"] for r in doc["rows"]} >= {"loss", "perplexity", "bleu4", "rouge1", "rouge2", "rougeL", "exact_match"}
    assert all(r["n"] == 6 and "base" in r for r in doc["rows"])
    folder = Path(out.stdout.split("results: ")[1].split()[0]).parent
    for view in ("tuned", "base"):
        preds = [json.loads(line) for line in (folder / f"predictions-{view}.jsonl").read_text().splitlines()]
        assert len(preds) == 6 and all(p["reference"] and "prediction" in p for p in preds)
    runs = run_cli("runs", "--runs-dir", str(eval_run.parent))
    assert runs.returncode == 0 and "eval" in runs.stdout and "loss" in runs.stdout.split("eval", 1)[1]


def test_without_data_a_run_is_scored_on_its_own_eval_data(eval_run, run_cli, tmp_path):
    out = run_cli("eval", str(eval_run), "--mode", "loss", "--max-samples", "3", "--no-base", "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["section"] for r in doc["rows"]] == ["loss · rows.json"] * 2 and "base" not in doc["rows"][0]
    assert "95% CI" in out.stdout and "diff" not in out.stdout  # alone: the interval of the score itself


@pytest.mark.parametrize("args, message", [
    (["--data", "{text}", "--mode", "generate"], "without a reference answer"),
    (["--data", "{missing}"], "does not exist"),
    (["--mode", "bench", "--tasks", "mmlux", "--bench-dir", "{dir}"], "did you mean 'mmlu'"),
    (["--mode", "loss,speed", "--data", "{text}"], "modes"),
])
def test_mistakes_exit_2_with_a_message(eval_run, run_cli, tmp_path, args, message):
    text = tmp_path / "plain.jsonl"
    text.write_text('{"text": "only text here"}\n', encoding="utf-8")
    subst = {"text": str(text), "missing": str(tmp_path / "nope.json"), "dir": str(tmp_path)}
    out = run_cli("eval", str(eval_run), *[a.format(**subst) for a in args])
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_a_crash_mid_eval_keeps_the_predictions_written_so_far(eval_run, tmp_path):
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.runner.cli", "eval", str(eval_run), "--mode", "generate",
                             "--data", str(eval_run.parent.parent / "rows.json"), "--batch-size", "1",
                             "--max-new-tokens", "48", "--no-base", "--out", str(out_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    preds = out_dir / "predictions-tuned.jsonl"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (preds.is_file() and preds.read_text().count("\n") >= 2):
            assert proc.poll() is None, "eval ended before it could be interrupted"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    kept = [json.loads(line) for line in preds.read_text().splitlines()]
    assert 2 <= len(kept) < 200
    assert json.loads((out_dir / "results.json").read_text())["state"] == "running"


@pytest.mark.slow
def test_quickstart_run_beats_its_base_on_identity_questions_by_exact_match(quickstart_run, run_cli, tmp_path):
    out = run_cli("eval", str(quickstart_run), "--data", str(ROOT / "recipes" / "data" / "forge_identity.jsonl"),
                  "--max-samples", "10", "--max-new-tokens", "40", "--out", str(tmp_path / "eval"))
    assert out.returncode == 0, out.stderr
    assert "tuned" in out.stdout and "base" in out.stdout
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    em = next(r for r in doc["rows"] if r["metric"] == "exact_match")
    assert em["tuned"] > em["base"], em
    loss = next(r for r in doc["rows"] if r["metric"] == "loss")
    assert loss["tuned"] < loss["base"]


def test_bench_scores_tuned_and_base_on_a_local_mmlu_with_few_shot(eval_run, run_cli, tmp_path):
    from test_eval_bench import MMLU, mini_mmlu

    root = mini_mmlu(tmp_path / "bench")
    out = run_cli("eval", str(eval_run), "--tasks", "mmlu", "--bench-dir", str(root), "--num-fewshot", "1",
                  "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    assert "mmlu (1-shot)" in out.stdout
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    (row,) = doc["rows"]
    assert row["metric"] == "acc" and row["n"] == sum(len(v) for v in MMLU.values())
    assert 0 <= row["tuned"] <= 100 and 0 <= row["base"] <= 100 and len(row["ci95"]) == 2
    assert set(doc["subjects"]["mmlu (1-shot)"]["tuned"]) == set(MMLU)
