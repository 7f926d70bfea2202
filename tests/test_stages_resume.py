"""kill -9 in the middle of a DPO run, then `tuneforge resume`: the later losses equal a straight
run's (fp32 on CPU), exactly as for SFT (tests/test_runs_lifecycle.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import yaml
from runs_helpers import losses, status, wait_for

from conftest import shared
from tuneforge.runner import checkpoints

CLI = [sys.executable, "-m", "tuneforge.runner.cli"]


def dpo_recipe(folder, model_dir, name: str):
    recipe = {
        "name": name, "stage": "dpo", "model": {"name_or_path": str(model_dir)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": [{"path": str(shared("dpo_en_demo.json")), "max_samples": 24}], "max_length": 160,
                 "truncation": "keep_end", "on_bad_rows": "skip"},
        "train": {"max_steps": 8, "batch_size": 2, "logging_steps": 1, "save_steps": 2, "save_total_limit": 2,
                  "learning_rate": 5e-3, "warmup_ratio": 0.0},
        "precision": "fp32", "device": "cpu", "output": {"runs_dir": str(folder / "runs")},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_dpo_resume_after_kill_9_equals_a_straight_run(tiny_model_dir, tmp_path):
    env = dict(os.environ)
    straight = subprocess.run([*CLI, "train", str(dpo_recipe(tmp_path, tiny_model_dir, "straight")), "--plain-every", "0"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]

    proc = subprocess.Popen([*CLI, "train", str(dpo_recipe(tmp_path, tiny_model_dir, "killed")), "--plain-every", "0"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    run_dir = tmp_path / "runs" / "killed"
    wait_for(lambda: (status(run_dir).get("step") or 0) >= 5, timeout=600, interval=0.02, what="step 5")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    assert checkpoints.step_of(latest) >= 4

    res = subprocess.run([*CLI, "resume", "killed"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert status(run_dir)["state"] == "finished" and status(run_dir)["resumed_from"] == str(latest)
    want, got = losses(tmp_path / "runs" / "straight"), losses(run_dir)
    assert sorted(got) == list(range(1, 9))
    for step in range(checkpoints.step_of(latest) + 1, 9):
        assert abs(got[step] - want[step]) <= 1e-5, (step, got[step], want[step])
