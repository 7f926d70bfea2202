"""The wizard's Stage step: a DPO recipe on top of an earlier SFT run, with the keyboard only."""

from __future__ import annotations

import pytest
import yaml

from conftest import shared
from tui_helpers import drive_wizard, screen_text, sync, type_into, wait_for, wait_screen

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _finished_sft_run(root, name="sft-x"):
    """A run folder as an SFT run leaves it (its recipe and final adapter)."""
    run = root / "runs" / name
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "stage": "sft", "method": "lora",
                                                     "model": {"name_or_path": "smollm2-135m"}}))
    return run


@sync
async def test_keyboard_only_dpo_recipe_from_an_earlier_run_validates(in_tmp, run_cli):
    from tuneforge.tui.app import TuneforgeApp

    _finished_sft_run(in_tmp)
    data = shared("dpo_en_demo.json")
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(data), stage="dpo", from_run="runs/sft-x", max_steps="3", name="dpo-demo",
                           finish="ctrl+s", stop_at="ReviewStep")
        text = screen_text(app)
        assert "smollm2-135m -> runs/sft-x (sft) -> this run (dpo)" in text
        await pilot.press("ctrl+s")
        await wait_screen(pilot, "RunsScreen")
    written = yaml.safe_load((in_tmp / "dpo-demo.yaml").read_text())
    assert written["stage"] == "dpo" and written["model"]["from_run"] == "runs/sft-x"
    out = run_cli("validate", str(in_tmp / "dpo-demo.yaml"), cwd=in_tmp)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["stage"] == "dpo" and resolved["dpo"]["beta"] == 0.1
    assert resolved["dpo"]["reference"]["kind"] == "base"
    assert resolved["train"]["learning_rate"] == 5e-5  # the preference stages' smaller step for LoRA


@sync
async def test_stage_step_shows_the_stage_options_and_refuses_a_missing_run(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, "", stage="dpo", from_run="runs/nope", stop_at="StageStep")
        screen = app.screen
        assert screen.query_one("#opts-dpo").display and not screen.query_one("#opts-kto").display
        assert screen.query_one("#f-dpo-beta Input").placeholder == "default: 0.1"
        assert str(screen.query_one("#f-dpo-reference-kind Select").value) == "base"
        await pilot.press("ctrl+n")
        assert type(app.screen).__name__ == "StageStep"
        assert "does not exist" in str(screen.query_one("#step-error").render())


@sync
async def test_dataset_step_lists_only_files_the_stage_can_train_on(in_tmp):
    import shutil

    from tuneforge.tui.app import TuneforgeApp

    for name in ("dpo_en_demo.json", "alpaca_en_demo.json"):
        shutil.copy(shared(name), in_tmp / name)
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, "", stage="dpo", stop_at="DatasetStep")
        tree = app.screen.query_one("#files")
        await wait_for(pilot, lambda: len(tree.root.children) > 0, 60, "the file tree")
        names = {str(n.label) for n in tree.root.children}
        assert names == {"dpo_en_demo.json"}, names
        assert "preference pairs" in screen_text(app)
        await pilot.press("tab")  # the tree -> the path input: a typed folder is browsed in the tree
        await type_into(pilot, str(shared("dpo_en_demo.json").parent))
        await wait_for(pilot, lambda: tree.path == shared("dpo_en_demo.json").parent, 10, "the tree re-rooted")
        await wait_for(pilot, lambda: "dpo_en_demo.json" in {str(n.label) for n in tree.root.children}, 60, "its files")
        assert "alpaca_en_demo.json" not in {str(n.label) for n in tree.root.children}
