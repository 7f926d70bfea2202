"""End to end: a training run reports every left-out row and every unfilled placeholder in
data_report.json and train.log."""

from __future__ import annotations

import json

from tuneforge.runner.recipe import recipe_from_dict


def test_run_writes_the_report_and_warns_about_bad_rows(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = ([{"instruction": f"Q{i}?", "output": f"A{i}."} for i in range(29)] + [{"instruction": "Who?", "output": "I am {{name}}."}]
            + [{"instruction": "no answer"}])
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = recipe_from_dict({
        "name": "data-e2e", "model": {"name_or_path": str(tiny_model_dir)}, "device": "cpu",
        "data": {"train": [{"path": "d.jsonl"}], "max_length": 64, "on_bad_rows": "warn", "cache": False},
        "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1},
    }, base_dir=tmp_path)
    from tuneforge.runner.train import train

    run = train(rec, progress_mode="plain").run
    report = json.loads(run.data_report.read_text())
    assert report["rows"] == 31 and report["used"] == 30 and report["bad_count"] == 1
    assert report["bad"]["missing field"]["first"][0]["where"] == "d.jsonl line 31"
    log = run.log.read_text()
    assert "WARNING" in log and "d.jsonl line 31" in log
    assert report["placeholders"] == {"unfilled": {"name": 1}, "first": ["d.jsonl line 30"]}
    assert "{{name}} in 1 row" in log and "placeholders: {name: ...} in the dataset entry" in log
