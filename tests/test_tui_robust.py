"""The wizard never crashes and never loses a keystroke (issue 19 items 1-3), at 80x24, with keys
sent in batches as a terminal multiplexer or a paste sends them."""

from __future__ import annotations

import pytest
import yaml

from conftest import shared
from tui_helpers import press_batch, screen_text, sync, type_into, wait_for, wait_screen

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _idle(app):
    return not [w for w in app.workers if w.group != "_loader" and not w.is_finished]


async def _to_method(pilot, model: str | None = None):
    app = pilot.app
    await wait_screen(pilot, "ModelStep")
    if model is not None:
        await pilot.press("tab")
        await type_into(pilot, model)
        await wait_for(pilot, lambda: app.screen._info is not None and app.screen._info.source == model, 30)
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "StageStep")
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "MethodStep")


@pytest.mark.parametrize("model", ["HuggingFaceTB/SmolLM2-360M-Instruct", "foo/bar"])
@sync
async def test_a_hub_id_gives_a_line_on_the_method_step_not_a_crash(in_tmp, model):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await _to_method(pilot, model)
        panel = app.screen.query_one("#estimate")
        await wait_for(pilot, lambda: "no estimate" in str(panel.render()), 60, "the estimate's answer")
        assert app.is_running and type(app.screen).__name__ == "MethodStep"


@sync
async def test_edit_then_next_through_every_step_with_workers_racing(in_tmp):
    """--edit a recipe and press ctrl+n as soon as each step appears: the data preview and the
    estimate load a tokenizer at the same time (once an ImportError that killed the app)."""
    from tuneforge.tui.app import TuneforgeApp

    recipe = in_tmp / "exp.yaml"
    recipe.write_text(yaml.safe_dump({"name": "exp", "data": {"train": [{"path": str(shared("alpaca_en_demo.json"))}]}}))
    app = TuneforgeApp(edit=recipe)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        await wait_for(pilot, lambda: app.screen._info is not None)
        for step in ("StageStep", "MethodStep", "DatasetStep"):
            await pilot.press("ctrl+n")
            await wait_screen(pilot, step, 30)
        await pilot.press("escape")  # back to Method while the preview still loads: a new estimate starts
        await wait_screen(pilot, "MethodStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "DatasetStep")
        await wait_for(pilot, lambda: _idle(app), 180, "the workers")
        assert app.is_running
        assert app.screen._preview is not None and app.screen._preview.usable, app.screen._preview


@pytest.mark.parametrize("content", [b"\xff\xfe not json at all {", b"[1, 2, 3]"], ids=["garbage", "not-rows"])
@sync
async def test_a_bad_data_file_is_a_problem_on_the_step_not_a_crash(in_tmp, content):
    from tuneforge.tui.app import TuneforgeApp

    (in_tmp / "bad.json").write_bytes(content)
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await _to_method(pilot)
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "DatasetStep")
        await pilot.press("tab")
        await type_into(pilot, "no/such/file.json")
        await wait_for(pilot, lambda: "no file at" in screen_text(app), 10, "the missing file's line")
        await type_into(pilot, "bad.json")
        await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 60, "the preview")
        assert app.screen._preview.problem and not app.screen._preview.usable
        await pilot.press("ctrl+n")
        assert type(app.screen).__name__ == "DatasetStep" and app.is_running


@pytest.mark.parametrize("field", ["data-max_length", "train-epochs", "train-learning_rate"])
@sync
async def test_clear_then_type_in_one_batch_keeps_every_key(in_tmp, field):
    """`tmux send-keys End C-u 512`: the keys arrive together; the field must end as '512'."""
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await _to_method(pilot)
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "DatasetStep")
        await pilot.press("tab")
        await type_into(pilot, str(shared("identity.json")))
        await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 120, "preview")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "HyperStep")
        inp = app.screen.query_one(f"#f-{field} Input")
        inp.focus()
        await pilot.pause()
        await press_batch(pilot, "end", "ctrl+u", "5", "1", "2")
        await wait_for(pilot, lambda: _idle(app), 30)
        assert inp.value == "512"
        await pilot.pause(0.5)
        assert inp.value == "512"


@sync
async def test_the_whole_wizard_walked_at_80x24_with_keys_in_batches(in_tmp, run_cli):
    from tuneforge.tui.app import TuneforgeApp

    from tui_helpers import drive_wizard

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(shared("alpaca_en_demo.json")), model="smollm2-135m", max_steps="512",
                           max_samples="64", name="batched", batch=True)
        await wait_screen(pilot, "RunsScreen")
    written = yaml.safe_load((in_tmp / "batched.yaml").read_text())
    assert written["name"] == "batched" and written["train"]["max_steps"] == 512
    assert written["data"]["train"][0]["max_samples"] == 64
    assert run_cli("validate", "batched.yaml", "--no-estimate", cwd=in_tmp).returncode == 0
