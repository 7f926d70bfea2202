"""End to end on a tiny random Llama with SmolLM2's real tokenizer: the run directory contract,
learning, the adapter's faithfulness, and how errors leave earlier runs alone."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import shared


def tiny_recipe(tmp_path, model_dir, **over):
    rec = {
        "name": "tiny",
        "model": {"name_or_path": str(model_dir)},
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train": [{"path": str(shared("alpaca_en_demo.json")), "max_samples": 48}],
                 "eval_split": 0.1, "max_length": 96},
        "train": {"max_steps": 12, "batch_size": 4, "learning_rate": 2e-2, "logging_steps": 2,
                  "warmup_ratio": 0.0, "scheduler": "constant"},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    for key, value in over.items():
        rec[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(rec))
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory, request):
    """One real `tuneforge train` subprocess (plain output) shared by the contract tests."""
    import os
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("tinyrun")
    recipe = tiny_recipe(tmp, tiny_model_dir)
    out = subprocess.run([sys.executable, "-m", "tuneforge.runner.cli", "train", str(recipe), "--plain-every", "0"],
                         cwd=tmp, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    return tmp, out


def test_train_writes_every_run_directory_file(tiny_run):
    tmp, out = tiny_run
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp / "runs" / "tiny"
    for name in ("recipe.yaml", "metrics.jsonl", "status.json", "train.log", "data_report.json"):
        assert (run / name).is_file(), name
    assert any((run / "checkpoints").glob("checkpoint-*"))
    adapter = run / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (adapter / name).is_file(), name

    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 12 == status["total_steps"]
    for key in ("pid", "host", "started_at", "ended_at", "device", "precision", "final_metrics"):
        assert status[key] not in (None, ""), key
    assert status["error"] is None
    assert {"train_loss", "eval_loss", "tokens_seen", "train_s", "tokens_per_s", "mfu", "peak_rss_mb"} <= set(status["final_metrics"])

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r.get("loss") is not None]
    assert [r["step"] for r in train_recs] == [1, 2, 4, 6, 8, 10, 12]
    for r in train_recs:
        assert set(r) >= {"step", "total_steps", "epoch", "loss", "lr", "grad_norm", "tokens_seen",
                          "tokens_per_s", "train_s", "elapsed_s", "eta_s"}
        assert r["total_steps"] == 12 and r["tokens_per_s"] > 0
    assert [r["tokens_seen"] for r in train_recs] == sorted(r["tokens_seen"] for r in train_recs)
    assert any(r.get("eval_loss") is not None for r in records)


def test_speed_figures_mean_one_thing(tiny_run):
    """tokens_per_s has one definition (training tokens / seconds in training steps, docs/runs.md):
    the summary line, status.json and the last metrics record agree, and MFU is a fraction."""
    import math
    import re

    tmp, out = tiny_run
    status = json.loads((tmp / "runs/tiny/status.json").read_text())
    fm = status["final_metrics"]
    summary = re.search(r"finished in \d+s at ([\d.]+) tokens/s \((\d+) tokens in ([\d.]+)s of training, MFU ([\d.]+)%\)",
                        out.stdout)
    assert summary, out.stdout[-1500:]
    said = float(summary.group(1))
    assert 0 < fm["train_s"] < fm["elapsed_s"]  # evaluation, loading and saving are not training time
    assert math.isclose(said, fm["tokens_seen"] / fm["train_s"], rel_tol=1e-3)
    assert said == fm["tokens_per_s"] and int(summary.group(2)) == fm["tokens_seen"]
    last = [json.loads(ln) for ln in (tmp / "runs/tiny/metrics.jsonl").read_text().splitlines()
            if json.loads(ln).get("loss") is not None][-1]
    assert last["tokens_per_s"] == fm["tokens_per_s"] and last["train_s"] == fm["train_s"]
    assert status["matmul_flops"] > 0 and 0 < fm["mfu"] <= 1
    assert math.isclose(float(summary.group(4)) / 100, fm["mfu"], abs_tol=1e-3)


def test_logged_loss_falls(tiny_run):
    tmp, _ = tiny_run
    losses = [json.loads(l)["loss"] for l in (tmp / "runs/tiny/metrics.jsonl").read_text().splitlines()
              if json.loads(l).get("loss") is not None]
    assert losses[-1] < losses[0] - 0.5, losses


def test_plain_output_when_not_a_terminal(tiny_run):
    _, out = tiny_run
    assert "\r" not in out.stdout and "\x1b" not in out.stdout
    lines = [l for l in out.stdout.splitlines() if l.startswith("step ") and "| loss " in l]
    assert len(lines) == 7 and lines[-1].startswith("step 12/12 | loss ")
    assert any(l.startswith("step 12/12 | eval_loss ") for l in out.stdout.splitlines())
    assert "tuneforge chat" in out.stdout


def test_saved_recipe_replays_exactly(tiny_run, run_cli):
    tmp, _ = tiny_run
    saved = tmp / "runs/tiny/recipe.yaml"
    out = run_cli("validate", str(saved), "--no-estimate")
    assert out.returncode == 0, out.stderr
    assert out.stdout == saved.read_text()


def test_base_plus_adapter_reproduces_trained_logits(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    result = train(load_recipe(tiny_recipe(tmp_path, tiny_model_dir, name="logits")), progress_mode="plain")
    ids = result.tokenizer.apply_chat_template([{"role": "user", "content": "Give three tips for staying healthy."}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
    trained = result.model.eval()
    with torch.no_grad():
        want = trained(**ids).logits.float()
        # the frozen base as training stored it (bf16 where the run computes in bf16), so the
        # comparison isolates the adapter
        base_dtype = trained.get_base_model().model.embed_tokens.weight.dtype
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=base_dtype)
        before = base(**ids).logits.float()
        loaded = PeftModel.from_pretrained(base, result.run.adapter).eval()
        got = loaded(**ids).logits.float()
    assert not torch.allclose(before, want, atol=1e-3)  # training changed the model
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_full_fine_tune_saves_a_loadable_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    path = tiny_recipe(tmp_path, tiny_model_dir, name="full", method="full")
    result = train(load_recipe(path, ["train.max_steps=4", "train.learning_rate=1e-3"]), progress_mode="plain")
    model_dir = result.run.model
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "chat_template.jinja").is_file()
    assert not result.run.adapter.exists()
    AutoModelForCausalLM.from_pretrained(model_dir)


def test_existing_run_is_never_overwritten(tiny_model_dir, tmp_path, run_cli):
    path = tiny_recipe(tmp_path, tiny_model_dir, name="same")
    first = run_cli("train", str(path), "train.max_steps=1", "data.eval_split=0")
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "runs/same/status.json"
    before = marker.read_text()
    second = run_cli("train", str(path), "train.max_steps=1", "data.eval_split=0")
    assert second.returncode == 0, second.stderr
    assert marker.read_text() == before
    assert json.loads((tmp_path / "runs/same-2/status.json").read_text())["state"] == "finished"


def test_bad_data_path_fails_cleanly_and_leaves_other_runs_alone(tiny_model_dir, tmp_path, run_cli):
    path = tiny_recipe(tmp_path, tiny_model_dir, name="bad")
    out = run_cli("train", str(path), "data.train.0.path=missing.json")
    assert out.returncode == 2
    assert "data file" in out.stderr and "missing.json" in out.stderr and "fix:" in out.stderr
    assert "data.train.0.path" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "bad").exists()  # refused with the recipe's problems, before a run starts


def test_bad_rows_are_reported_not_dropped_silently(tiny_model_dir, tmp_path, run_cli):
    data = tmp_path / "rows.jsonl"
    good = {"instruction": "Say hi", "output": "Hi!"}
    rows = [good] * 8 + [{"instruction": "Say hi", "output": ""}, {"instruction": "x"}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    path = tiny_recipe(tmp_path, tiny_model_dir, name="rows")
    out = run_cli("train", str(path), f"data.train.0.path={data}", "data.eval_split=0")
    assert out.returncode == 2
    assert "2 of 10 rows" in out.stderr
    assert "empty assistant turn: rows.jsonl line 9 ('output' is empty)" in out.stderr
    assert "missing field: rows.jsonl line 10 ('output' is missing)" in out.stderr


def test_unknown_model_folder_is_a_clear_error(tmp_path, run_cli, tiny_model_dir):
    path = tiny_recipe(tmp_path, tiny_model_dir, name="nomodel")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    out = run_cli("train", str(path), f"model.name_or_path={empty}")
    assert out.returncode == 2 and "has no config.json" in out.stderr and "Traceback" not in out.stderr
