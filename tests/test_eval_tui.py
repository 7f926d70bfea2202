"""The app's eval: the run list and the monitor show a run's latest eval, and the eval screen starts
one (a real background `tuneforge eval` through the service layer) and shows its table."""

from __future__ import annotations

import json

import pytest

from conftest import shared
from tui_helpers import screen_text, sync, type_into, wait_for, wait_screen

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    root = tmp_path_factory.mktemp("eval-tui")
    recipe = recipe_from_dict({
        "name": "tiny", "method": "lora", "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": [{"path": str(shared("alpaca_en_demo.json")), "max_samples": 8}], "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 2, "logging_steps": 1, "learning_rate": 1e-3},
        "output": {"runs_dir": str(root / "runs")}, "device": "cpu",
    })
    rows = json.loads(shared("alpaca_en_demo.json").read_text(encoding="utf-8"))[:3]
    (root / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    return train(recipe, progress_mode="plain").run, root / "rows.json"


@sync
async def test_start_an_eval_from_the_app_and_see_it_in_the_run_list_and_monitor(tiny_run, tmp_path):
    from tuneforge.tui.app import TuneforgeApp

    run, rows = tiny_run
    app = TuneforgeApp(runs_dir=run.path.parent)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_screen(pilot, "RunsScreen")
        assert not app.screen.query_one("#eval-line").display  # never evaluated
        await pilot.press("e")
        await wait_screen(pilot, "EvalScreen")
        assert "No eval of this run yet" in screen_text(app)
        app.screen.query_one("#data").focus()
        await type_into(pilot, str(tmp_path / "missing.json"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "does not exist" in screen_text(app), 10, "the error")
        await type_into(pilot, str(rows))
        app.screen.query_one("#modes").focus()
        await type_into(pilot, "loss")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: (app.screen.doc or {}).get("state") == "finished", 300, "the eval's results")
        assert "does not exist" not in screen_text(app)
        assert {r["metric"] for r in app.screen.doc["rows"]} == {"loss", "perplexity"}
        assert all("base" in r for r in app.screen.doc["rows"])
        await pilot.press("escape")
        await wait_screen(pilot, "RunsScreen")
        await wait_for(pilot, lambda: "eval: loss" in screen_text(app), 10, "the eval line")
        await pilot.press("enter")
        await wait_screen(pilot, "MonitorScreen")
        await wait_for(pilot, lambda: "eval: loss" in screen_text(app), 10, "the monitor's eval line")
    doc = json.loads(next((run.path / "eval").glob("*/results.json")).read_text())
    assert doc["state"] == "finished" and {r["metric"] for r in doc["rows"]} == {"loss", "perplexity"}
