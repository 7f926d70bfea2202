"""The wizard, driven with the keyboard only, writes recipes that `tuneforge validate` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import shared
from tui_helpers import drive_wizard, screen_text, sync, type_into, wait_for, wait_screen

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@sync
async def test_lora_on_embedded_model_writes_a_valid_recipe(in_tmp, run_cli):
    from tuneforge.tui.app import TuneforgeApp

    data = shared("alpaca_en_demo.json")
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(data), max_steps="5", name="lora-demo")
        await wait_screen(pilot, "RunsScreen")
    recipe = in_tmp / "lora-demo.yaml"
    written = yaml.safe_load(recipe.read_text())
    assert written["method"] == "lora" and written["model"]["name_or_path"] == "smollm2-135m"
    assert written["train"]["max_steps"] == 5
    out = run_cli("validate", str(recipe), cwd=in_tmp)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["data"]["train"][0]["path"] == str(data.resolve())
    assert resolved["name"] == "lora-demo" and resolved["lora"]["r"] == 16


@sync
async def test_qlora_writes_a_valid_recipe_with_the_lora_and_quantization_settings(in_tmp, run_cli):
    from tuneforge.tui.app import TuneforgeApp

    data = shared("alpaca_en_demo.json")
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(data), method="qlora", name="qlora-demo")
        await wait_screen(pilot, "RunsScreen")
    written = yaml.safe_load((in_tmp / "qlora-demo.yaml").read_text())
    assert written["method"] == "qlora" and written["model"]["name_or_path"] == "smollm2-135m"
    out = run_cli("validate", str(in_tmp / "qlora-demo.yaml"), cwd=in_tmp)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    # qlora = LoRA adapters (lora section) on a quantized base (qlora section): both reach the runner.
    assert resolved["method"] == "qlora" and resolved["name"] == "qlora-demo"
    assert resolved["qlora"]["bits"] == 4 and resolved["lora"]["r"] == 16
    assert resolved["data"]["train"][0]["path"] == str(data.resolve())


@sync
async def test_bad_values_show_the_schema_message_and_block_next(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        await pilot.press("tab")
        await type_into(pilot, "./no/such/model")
        await wait_for(pilot, lambda: app.screen._info is not None and app.screen._info.source == "./no/such/model")
        await pilot.press("ctrl+n")
        assert type(app.screen).__name__ == "ModelStep"
        assert "does not exist" in str(app.screen.query_one("#step-error").render())
        await type_into(pilot, "smollm2-135m")
        await wait_for(pilot, lambda: app.screen._info.source == "smollm2-135m")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "StageStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "MethodStep")
        await pilot.press("tab")  # the methods -> lora r
        await type_into(pilot, "0")
        await pilot.press("ctrl+n")
        assert type(app.screen).__name__ == "MethodStep"
        editor = app.screen.query_one("#f-lora-r")
        assert editor.has_class("-invalid")
        assert "greater than or equal to 1" in str(editor.query_one(".field-error").render())


@sync
async def test_printable_keys_go_into_inputs_and_question_mark_opens_help_elsewhere(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        await pilot.press("tab")  # into the model input
        await pilot.press("end", "?")
        assert type(app.screen).__name__ == "ModelStep"
        assert app.focused.value.endswith("?")
        await pilot.press("shift+tab")  # back to the model list: no input focused
        await pilot.press("question_mark")
        await wait_screen(pilot, "HelpScreen")
        assert "ctrl+n" in screen_text(app) or app.screen.query("Markdown")
        await pilot.press("escape")
        await wait_screen(pilot, "ModelStep")


@sync
async def test_open_existing_recipe_edit_and_never_overwrite_without_asking(in_tmp, run_cli):
    from tuneforge.tui.app import TuneforgeApp

    data = shared("alpaca_en_demo.json")
    recipe = in_tmp / "exp.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "exp", "method": "full", "data": {"train": [{"path": str(data)}], "max_length": 256},
        "train": {"batch_size": 2, "learning_rate": 1e-5},
    }))
    app = TuneforgeApp(edit=recipe)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        assert app.wizard.draft["method"] == "full"
        for step in ("StageStep", "MethodStep", "DatasetStep"):
            await wait_for(pilot, lambda: not getattr(app.screen, "_pending", False) and getattr(app.screen, "_info", 1) is not None)
            await pilot.press("ctrl+n")
            await wait_screen(pilot, step)
        await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 120, "preview")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "HyperStep")
        # values from the file are kept (suggestions only fill untouched fields)
        assert app.screen.query_one("#f-train-batch_size Input").value == "2"
        await pilot.press("tab", "tab")  # epochs -> max steps -> batch size
        await type_into(pilot, "4")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "ReviewStep")
        await pilot.press("ctrl+s")
        await wait_screen(pilot, "Confirm")
        await pilot.press("n")
        await wait_screen(pilot, "ReviewStep")
        assert yaml.safe_load(recipe.read_text())["train"]["batch_size"] == 2  # untouched
        await pilot.press("ctrl+s")
        await wait_screen(pilot, "Confirm")
        await pilot.press("y")
        await wait_screen(pilot, "RunsScreen")
    written = yaml.safe_load(recipe.read_text())
    assert written["train"]["batch_size"] == 4 and written["train"]["learning_rate"] == 1e-5
    assert written["data"]["max_length"] == 256 and written["method"] == "full"
    assert run_cli("validate", str(recipe), cwd=in_tmp).returncode == 0
