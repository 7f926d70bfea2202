"""Helpers shared by the tests/test_runs_*.py files: small recipes on the tiny model, polling."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml


def write_recipe(folder: Path, model_dir: Path, data: Path, name: str, **train) -> Path:
    """A tiny, fast, deterministic recipe (fp32, so resumed losses match bit for bit)."""
    t = {"max_steps": 12, "batch_size": 2, "logging_steps": 1, "save_steps": 2, "save_total_limit": 3,
         "learning_rate": 5e-3, "warmup_ratio": 0.0, **train}
    recipe = {
        "name": name, "model": {"name_or_path": str(model_dir)},
        "data": {"train": [{"path": str(data), "max_samples": 48}], "max_length": 96},
        "train": t, "precision": "fp32", "device": "cpu",
        "output": {"runs_dir": str(folder / "runs")},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def wait_for(predicate, timeout: float = 120, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("loss") is not None:
            out[rec["step"]] = rec["loss"]
    return out
