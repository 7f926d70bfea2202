"""The CI-sized proof of learning on real weights: SmolLM2-135M-Instruct learns a new name.

The quickstart recipe (recipes/quickstart.yaml: LoRA on the embedded model, "I am Forge" rows) is
trained once for the session (conftest.quickstart_run, shared with the REPL test); "Who are you?" is
asked before and after, through the same `tuneforge chat --plain` a user would pipe into. (Filling
identity.json's placeholders is checked row by row in test_data_formats.py.)
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_smollm2_learns_its_new_identity(quickstart_run, run_cli):
    before = run_cli("chat", "smollm2-135m", "--plain", "--max-new-tokens", "40", input="Who are you?\n")
    assert before.returncode == 0, before.stderr
    assert "Forge" not in before.stdout

    status = json.loads((quickstart_run / "status.json").read_text())
    assert status["state"] == "finished"
    after = run_cli("chat", str(quickstart_run), "--plain", "--max-new-tokens", "40",
                    input="Who are you?\nWhat is your name?\n")
    assert after.returncode == 0, after.stderr
    replies = [line for line in after.stdout.splitlines() if line.strip()]
    assert len(replies) >= 2 and "Forge" in replies[0], after.stdout
