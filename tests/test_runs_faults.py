"""Faults inside a run, in-process on the tiny model: a NaN loss, a checkpoint write that fails
half way (disk full), and experiment trackers writing into the run directory."""

from __future__ import annotations

import errno
import json
import math

import pytest
from runs_helpers import losses, status, write_recipe

from tuneforge.runner import checkpoints
from tuneforge.runner.recipe import load_recipe
from tuneforge.runner.train import train

POISON_WORD = "Zyzzyvas"


@pytest.fixture(scope="module")
def poisoned(tiny_model_dir, tmp_path_factory):
    """A real failure mode: a model whose input embedding for one token is NaN (a bad merge or
    vocab resize does this), and one data row that uses that token. Loss is finite until the
    trainer reaches that row, then NaN."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from conftest import shared

    out = tmp_path_factory.mktemp("poisoned")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = json.loads(shared("alpaca_en_demo.json").read_text(encoding="utf-8"))[:11]
    seen = {i for r in rows for i in tok(r["instruction"] + r["input"] + r["output"])["input_ids"]}
    bad = [i for i in tok(" " + POISON_WORD)["input_ids"] if i not in seen][0]
    rows.insert(10, {"instruction": "Say a rare word.", "input": "", "output": f"The word is {POISON_WORD}."})
    data = out / "data.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.tie_word_embeddings = False  # untied, like most larger models: only the input row is broken
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight[bad] = float("nan")
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out / "model", data


def test_nan_loss_stops_with_message_and_finite_last_checkpoint(poisoned, tmp_path):
    model_dir, data = poisoned
    recipe = load_recipe(write_recipe(tmp_path, model_dir, data, "nan", batch_size=1, max_steps=12, save_steps=2))
    with pytest.raises(Exception) as info:
        train(recipe, progress_mode="plain")
    run_dir = tmp_path / "runs" / "nan"
    seen = losses(run_dir)
    nan_step = min(s for s, v in seen.items() if not math.isfinite(v))
    assert all(math.isfinite(v) for s, v in seen.items() if s < nan_step)
    assert nan_step >= 3, "with seed 42 the trainer reaches row 10 at step 7, after two checkpoints"
    msg = str(info.value)
    assert type(info.value).__name__ == "NonFiniteLoss" and info.value.exit_code == 1
    assert f"loss became nan at step {nan_step}" in msg
    st = status(run_dir)
    assert st["state"] == "failed" and "nan" in st["error"]
    # the last checkpoint predates the NaN and holds finite weights; nothing after it was saved
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None and checkpoints.step_of(latest) < nan_step
    assert f"last checkpoint with finite weights is {latest}" in msg
    assert not (run_dir / "adapter").exists()
    from safetensors.torch import load_file

    weights = load_file(latest / "adapter_model.safetensors")
    assert weights and all(bool(t.isfinite().all()) for t in weights.values())
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_checkpoint_write_keeps_previous_one_resumable(tiny_model_dir, tmp_path, monkeypatch):
    """Disk full while writing checkpoint-4: checkpoint-2 stays whole, no half checkpoint-4 is
    visible, and the run resumes from checkpoint-2."""
    import torch

    from conftest import shared

    path = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "full-disk", max_steps=6)
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **kw):
        calls.append(str(f))
        if "checkpoint-4" in str(f) and str(f).endswith("optimizer.pt"):
            with open(f, "wb") as half:
                half.write(b"\x80\x02 half an optimizer")  # some bytes land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        train(load_recipe(path), progress_mode="plain")
    monkeypatch.setattr(torch, "save", real_save)
    run_dir = tmp_path / "runs" / "full-disk"
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2"], "no half checkpoint, no staging left over"
    assert any("checkpoint-4" in c for c in calls), "the failure was really injected mid-save"
    assert checkpoints.latest_checkpoint(ckpts) == ckpts / "checkpoint-2"
    assert status(run_dir)["state"] == "failed"

    result = train(load_recipe(run_dir / "recipe.yaml"), progress_mode="plain", run_dir=run_dir,
                   resume_from=ckpts / "checkpoint-2")
    assert status(run_dir)["state"] == "finished" and result.run.weights is not None
    assert sorted(losses(run_dir)) == [1, 2, 3, 4, 5, 6]


def test_tensorboard_events_land_in_run_dir(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import shared

    path = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "tb", max_steps=4, save_steps=None)
    text = path.read_text() + "report_to: [tensorboard]\n"
    path.write_text(text)
    train(load_recipe(path), progress_mode="plain")
    tb = tmp_path / "runs" / "tb" / "tensorboard"
    assert list(tb.glob("events.out.tfevents.*")), list(tb.iterdir()) if tb.exists() else "no tensorboard dir"
    acc = EventAccumulator(str(tb))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4]
    recorded = losses(tmp_path / "runs" / "tb")
    # TensorBoard stores float32 (eps 1.2e-7); metrics.jsonl keeps the Python float
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([recorded[s] for s in steps], rel=1e-6)


def test_wandb_without_network_goes_offline_with_a_message(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import importlib.util

    from conftest import shared

    if importlib.util.find_spec("wandb") is None:
        pytest.fail("wandb is not installed; it is in the test extra: pip install -e '.[test]'", pytrace=False)

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    path = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "wb", max_steps=2, save_steps=None)
    path.write_text(path.read_text() + "report_to: [wandb]\n")
    train(load_recipe(path), progress_mode="plain")
    out = capsys.readouterr().out
    assert "wandb: not logged in" in out and "offline" in out
    run_dir = tmp_path / "runs" / "wb"
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb wrote its offline run into the run directory"
    assert status(run_dir)["state"] == "finished"


def test_tracker_package_missing_is_a_user_error_with_a_fix(tiny_model_dir, tmp_path, run_cli):
    """mlflow made unimportable in the child by the real import machinery: a folder first on
    PYTHONPATH holds an `mlflow` package whose import fails, as a missing or half-installed one does."""
    import os

    from conftest import shared

    hide = tmp_path / "hide" / "mlflow"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'mlflow'\", name='mlflow')\n")
    path = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "mlf", max_steps=1, save_steps=None)
    path.write_text(path.read_text() + "report_to: [tensorboard, mlflow]\n")
    pythonpath = os.pathsep.join(p for p in (str(hide.parent), os.environ.get("PYTHONPATH")) if p)
    out = run_cli("train", str(path), env={"PYTHONPATH": pythonpath})
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "'mlflow' package is not installed" in text and "pip install mlflow" in text
    assert "Traceback" not in text
    assert not (tmp_path / "runs" / "mlf" / "adapter").exists()


def test_mlflow_logs_the_run_into_the_run_dir(tiny_model_dir, tmp_path, monkeypatch):
    """The real package (mlflow-skinny, in the `test` extra): the Trainer's MLflow callback writes
    every logged loss into runs/<name>/mlruns."""
    import importlib.util

    from conftest import shared

    if importlib.util.find_spec("mlflow") is None:
        pytest.fail("mlflow is not installed; it is in the test extra: pip install -e '.[test]'", pytrace=False)
    from mlflow.tracking import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)  # setup_trackers sets them for this process: undone after
    path = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "mlf", max_steps=2, save_steps=None)
    path.write_text(path.read_text() + "report_to: [mlflow]\n")
    train(load_recipe(path), progress_mode="plain")
    run_dir = tmp_path / "runs" / "mlf"
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.info.run_name == "mlf" and run.info.status == "FINISHED"
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
    recorded = losses(run_dir)
    assert sorted(logged) == [1, 2]
    assert logged == pytest.approx({s: recorded[s] for s in logged}, rel=1e-6)  # the same logged numbers
