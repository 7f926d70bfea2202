"""The plain REPL: stdin prompts, stdout replies only, commands report on stderr; and the real identity fine-tune."""

from __future__ import annotations

import io
import re

import pytest

from chat_helpers import tiny_lora_run
from tuneforge.runner import chat
from tuneforge.runner.chat_repl import run_repl
from tuneforge.runner.chat_session import Conversation


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir):
    return tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


@pytest.fixture(scope="session")
def engine(tiny_run):
    return chat.load(str(tiny_run), device="cpu")


def _repl(engine, text: str, compare: bool = False, system: str | None = None):
    out, err = io.StringIO(), io.StringIO()
    conv = Conversation(system=system)
    run_repl(engine, conv, compare=compare, stdin=io.StringIO(text), stdout=out, stderr=err, interactive=False)
    return conv, out.getvalue(), err.getvalue()


def test_stdout_carries_only_the_streamed_replies(engine, tmp_path):
    engine.sampling = chat.Sampling(max_new_tokens=6)
    saved = tmp_path / "chats.jsonl"
    conv, out, err = _repl(engine, f"Who are you?\n\n/stats\n/save {saved}\n/set max_new_tokens=3\nAnd then?\n")
    first, second = (t.replies["tuned"] for t in conv.turns)
    assert out == f"{first}\n{second}\n"  # blank lines are skipped; command output is not on stdout
    assert engine.last_stats.new_tokens <= 3  # /set applied to the next reply
    assert first == engine.reply([{"role": "user", "content": "Who are you?"}], chat.Sampling(max_new_tokens=6))
    assert "to first token" in err and f"saved to {saved}" in err and "max_new_tokens=3" in err
    assert saved.read_text().count("\n") == 1


def test_compare_prints_both_answers(engine):
    engine.sampling = chat.Sampling(max_new_tokens=6)
    conv, out, _ = _repl(engine, "Who are you?\n", compare=True)
    replies = conv.turns[0].replies
    assert out == f"[tuned] {replies['tuned']}\n[base] {replies['base']}\n"
    assert replies["tuned"] != replies["base"]


def test_command_mistakes_are_reported_and_the_repl_goes_on(engine):
    engine.sampling = chat.Sampling(max_new_tokens=3)
    conv, out, err = _repl(engine, "/set top_p=7\n/undo\n/save\nHi\n")
    assert "error: top_p = 7 is out of range" in err and "fix:" in err
    assert "error: nothing to undo" in err and "error: /save needs a file name" in err
    assert len(conv.turns) == 1 and out == conv.turns[0].replies["tuned"] + "\n"


def test_chat_on_a_run_without_weights_fails_fast_with_a_fix(tmp_path, run_cli):
    run = tmp_path / "runs" / "half"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: half\n")
    (run / "status.json").write_text('{"state": "running"}')
    res = run_cli("chat", "half", input="Hi\n", timeout=120)
    assert res.returncode == 2 and "no final weights yet" in res.stderr and "fix:" in res.stderr
    assert res.stdout == ""


@pytest.mark.slow
def test_piped_chat_answers_with_the_new_identity(quickstart_run, run_cli):
    # No --plain: stdin is a pipe, so tuneforge picks the plain REPL by itself.
    res = run_cli("chat", str(quickstart_run), input="Who are you?\n/stats\nWhat is your name?\n", timeout=600)
    assert res.returncode == 0, res.stderr
    replies = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(replies) == 2 and all("Forge" in r for r in replies), res.stdout
    ttft = float(re.search(r"([\d.]+) s to first token", res.stderr).group(1))
    print(f"SmolLM2 + LoRA, time to first token after load: {ttft:.2f} s; {res.stderr.strip()}")
    assert ttft < 1.0, res.stderr  # the speed target on this CPU
