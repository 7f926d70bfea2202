"""`tuneforge data preview | stats | check` as a user runs them (real subprocesses, real tokenizer)."""

from __future__ import annotations

import json
import re

from rich.cells import cell_len

from conftest import ROOT, shared


def test_preview_marks_exactly_the_replies_chinese_included(run_cli):
    path = shared("alpaca_zh_demo.json")
    rows = json.loads(path.read_text(encoding="utf-8"))
    res = run_cli("data", "preview", str(path), "-n", "2", "--max-length", "2048")
    assert res.returncode == 0, res.stderr
    for row in rows[:2]:
        assert f"[[{row['output']}<|im_end|>]]" in res.stdout
        assert f"[[{row['instruction']}" not in res.stdout
    assert "alpaca_zh_demo.json row 2" in res.stdout and "alpaca_zh_demo.json row 3" not in res.stdout


def test_preview_in_a_terminal_uses_colour_not_markers(run_cli, tmp_path):
    p = tmp_path / "one.jsonl"
    p.write_text(json.dumps({"instruction": "Name a colour.", "output": "Blue."}) + "\n")
    res = run_cli("data", "preview", str(p), env={"FORCE_COLOR": "1", "COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    assert "[[" not in res.stdout and "\x1b[" in res.stdout
    trained = re.findall(r"\x1b\[1;32m([^\x1b]*)", res.stdout)
    assert "Blue.<|im_end|>" in trained


def test_stats_chinese_table_is_aligned(run_cli):
    res = run_cli("data", "stats", str(shared("alpaca_zh_demo.json")), "--max-length", "512", "--batch-size", "4",
                  env={"COLUMNS": "100"})
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "1000 (1000 train, 0 eval)" in out and "padding waste at batch size 4" in out
    assert re.search(r"length p50 / p90 / p95 / p99 / max\s*│\s*\d+ / \d+ / \d+ / \d+ / 512", out)
    table = out[out.index("longest rows"):].splitlines()[1:]
    body = [line for line in table if line.startswith(("│", "┏", "┡", "└", "┃"))]
    assert any(re.search(r"[\u4e00-\u9fff]", line) for line in body)  # Chinese text is in the table
    assert len({cell_len(line) for line in body}) == 1  # and every line has the same terminal width


def test_check_exit_codes_and_report(run_cli, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [
        {"instruction": "Q", "output": "A"}, {"instruction": "Q"}, {"instruction": "Q", "output": ""}]))
    res = run_cli("data", "check", str(bad))
    assert res.returncode == 2
    assert "missing field" in res.stdout and "bad.jsonl line 2" in res.stdout and "empty assistant turn" in res.stdout
    assert "training would stop" in res.stdout  # 2 of 3 bad is over the 5% that 'auto' accepts
    good = run_cli("data", "check", str(ROOT / "recipes" / "quickstart.yaml"))
    assert good.returncode == 0, good.stderr + good.stdout
    assert "all rows are valid" in good.stdout
    missing = run_cli("data", "check", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "not a recipe, data file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_bad_options_and_unreadable_files_are_user_errors(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.runner.cli import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "Q", "output": "A"}) + "\n")
    (tmp_path / "bad.parquet").write_bytes(b"junk")
    for args, message in [
        (["check", str(rows), "--max-length", "5"], "max_length: Input should be greater than or equal to 16 (got 5)"),
        (["check", str(rows), "--format", "bogus"], "format: Input should be 'auto', 'alpaca'"),
        (["stats", str(tmp_path / "bad.parquet")], "bad.parquet is not a readable parquet file"),
    ]:
        res = CliRunner().invoke(app, ["data", *args])
        assert res.exit_code == 2 and message in res.output, res.output
        assert "tuneforge failed" not in res.output
