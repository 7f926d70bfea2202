"""The CI-sized proof of learning on real weights: SmolLM2-135M-Instruct learns a new name without
forgetting the rest.

The quickstart recipe (recipes/quickstart.yaml: LoRA on the embedded model, "I am Forge" rows mixed
with general instructions in the model's own words) is
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


@pytest.mark.slow
def test_after_the_quickstart_a_general_question_still_gets_a_general_answer(quickstart_run, run_cli):
    """The first quickstart (40 identity rows, 5 epochs) answered everything with 'The tuneforge team
    is fine-tuned by the tuneforge team.' A question it never saw must be answered on topic."""
    # The mild repetition penalty the replay rows were written with: under pure greedy decoding the
    # 135M model loops on list numbering ("1.1.1.1") before and after training alike.
    out = run_cli("chat", str(quickstart_run), "--plain", "--max-new-tokens", "80", "--repetition-penalty", "1.1",
                  input="Give me three tips for learning Python.\n")
    assert out.returncode == 0, out.stderr
    answer = out.stdout.strip()
    assert "forge" not in answer.lower(), answer
    assert "python" in answer.lower() and len(answer.split()) >= 15, answer
