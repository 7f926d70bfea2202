"""The one error path (runner/cli_errors.py), through the real `tuneforge` command: a user mistake in
any command prints `error:` and `fix:` and exits 2 without a traceback; `--debug` adds one; anything
else prints `tuneforge failed: Type: message` and exits 1."""

from __future__ import annotations

import pytest

# A user mistake per command: a run, recipe or data file that does not exist.
MISTAKES = [
    ("train", "missing.yaml"),
    ("train", "missing.yaml", "--detach"),
    ("validate", "missing.yaml"),
    ("resume", "nosuch"),
    ("watch", "nosuch"),
    ("logs", "nosuch"),
    ("stop", "nosuch"),
    ("checkpoint", "nosuch"),
    ("plot", "nosuch"),
    ("export", "nosuch", "--out", "out"),
    ("data", "check", "missing.jsonl"),
    ("data", "stats", "missing.jsonl"),
    ("data", "preview", "missing.jsonl"),
    ("train", "missing.yaml", "--progress", "fancy"),
]


@pytest.mark.parametrize("args", MISTAKES, ids=lambda a: " ".join(a[:2]))
def test_a_user_mistake_in_any_command_exits_2_without_a_traceback(args, run_cli):
    res = run_cli(*args, timeout=120)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("args", [("validate", "missing.yaml"), ("stop", "nosuch"), ("data", "check", "missing.jsonl")],
                         ids=lambda a: a[0])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(args, run_cli):
    res = run_cli("--debug", *args, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "error: " in res.stderr and "Traceback (most recent call last)" in res.stderr
    assert any(line.startswith("tuneforge.runner.errors.") for line in res.stderr.splitlines())  # the raised type


def test_a_runtime_failure_exits_1_with_its_type_and_a_hint(run_cli, tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    (tmp_path / "r.yaml").write_text("data:\n  train:\n    - path: data.jsonl\noutput:\n  runs_dir: runs\n")
    res = run_cli("train", "r.yaml", timeout=120)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stderr.startswith("tuneforge failed: FileExistsError: ") and "--debug" in res.stderr
    assert "Traceback" not in res.stderr
    debug = run_cli("--debug", "train", "r.yaml", timeout=120)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_interrupts_keep_their_exit_code(capsys):
    from tuneforge.runner.cli_errors import report
    from tuneforge.runner.errors import TuneforgeError

    stopped = KeyboardInterrupt("stopped by tuneforge stop")
    stopped.exit_code = 143  # what a RunStopped carries after SIGTERM
    assert report(stopped) == 143 and report(KeyboardInterrupt()) == 130
    assert report(TuneforgeError("bad flag", "use another")) == 2
    err = capsys.readouterr().err
    assert "error: bad flag" in err and "fix: use another" in err
