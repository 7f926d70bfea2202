"""The CI-sized proof of learning on real weights: SmolLM2-135M-Instruct learns a new name.

Fine-tunes the embedded model on LLaMA-Factory's identity.json (placeholders filled with
"Forge" / "the tuneforge team") and asks "Who are you?" before and after, through the same
`tuneforge chat --plain` a user would pipe into.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import shared


@pytest.mark.slow
def test_smollm2_learns_its_new_identity(tmp_path, run_cli):
    recipe = {
        "name": "identity",
        "model": {"name_or_path": "smollm2-135m"},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {
            "train": [{"path": str(shared("identity.json")),
                       "placeholders": {"name": "Forge", "author": "the tuneforge team"}}],
            "max_length": 256,
        },
        "train": {"epochs": 3, "batch_size": 4, "learning_rate": 5e-4, "warmup_ratio": 0.05, "logging_steps": 10},
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump(recipe))

    before = run_cli("chat", "smollm2-135m", "--plain", "--max-new-tokens", "40", input="Who are you?\n")
    assert before.returncode == 0, before.stderr
    assert "Forge" not in before.stdout

    trained = run_cli("train", str(path), timeout=1500)
    assert trained.returncode == 0, trained.stderr[-3000:]
    status = json.loads((tmp_path / "runs/identity/status.json").read_text())
    assert status["state"] == "finished"

    after = run_cli("chat", str(tmp_path / "runs/identity"), "--plain", "--max-new-tokens", "40",
                    input="Who are you?\nWhat is your name?\n")
    assert after.returncode == 0, after.stderr
    replies = [line for line in after.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2 and "Forge" in replies[0], after.stdout
