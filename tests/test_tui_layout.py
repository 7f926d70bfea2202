"""80x24 really works (issue 19 item 3): everything reachable by keyboard, choices visible without
colour, messages wrapped, the estimate on the review step."""

from __future__ import annotations

import pytest

from conftest import shared
from tui_helpers import drive_wizard, sync, type_into, wait_for, wait_screen

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _lines(widget) -> list[str]:
    """What a widget shows, line by line, without colour (as a monochrome terminal shows it)."""
    return [strip.text for strip in widget.render_lines(widget.region.reset_offset)]


def _buttons(app) -> list[str]:
    """The method buttons' text without colour (as a monochrome terminal shows them)."""
    return [str(b.render()) for b in app.screen.query("#methods RadioButton")]


@sync
async def test_enter_on_a_model_advances_and_the_chosen_method_is_marked_without_colour(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        assert str(app.screen.query_one("#back").label) == "Close"
        await pilot.press("enter")  # the highlighted (embedded) model
        await wait_screen(pilot, "StageStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "MethodStep")
        lines = _buttons(app)
        marked = [ln for ln in lines if "●" in ln]
        assert len(marked) == 1 and "lora " in marked[0], lines
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.wizard.draft["method"] != "lora", 5)
        marked = [ln for ln in _buttons(app) if "●" in ln]
        assert len(marked) == 1 and app.wizard.draft["method"] in marked[0]


@sync
async def test_the_estimate_says_estimating_then_shows_on_the_review_step(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        await wait_for(pilot, lambda: app.screen._info is not None)
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "StageStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "MethodStep")
        first = str(app.screen.query_one("#estimate").render())
        assert "estimating" in first or "memory" in first, first  # never an empty box or '()'
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "DatasetStep")
        await pilot.press("tab")
        await type_into(pilot, str(shared("identity.json")))
        await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 120, "preview")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "HyperStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "ReviewStep")
        box = app.screen.query_one("#review-estimate")
        await wait_for(pilot, lambda: "per epoch" in str(box.render()), 120, "the time estimate")


@sync
async def test_dataset_examples_are_reachable_by_keyboard_at_80x24(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(shared("alpaca_en_demo.json")), stop_at="DatasetPreview")
        examples = app.screen.query_one("#examples")
        body = app.screen.query_one("#body")
        # the examples do not fit below the form at 80x24: the keyboard must bring them into view
        assert examples.region.bottom > 24 or examples.region.height == 0, examples.region
        for _ in range(8):  # Tab on until the examples have the focus
            if app.focused is examples:
                break
            await pilot.press("tab")
        assert app.focused is examples
        await pilot.pause()
        assert 0 < examples.region.y < 24, examples.region  # scrolled into view
        before = body.scroll_y
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: body.scroll_y > before, 5, "PageDown to scroll")


@sync
async def test_a_long_validation_message_is_wrapped_not_cut(in_tmp):
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await drive_wizard(pilot, str(shared("identity.json")), stop_at="HyperStep")
        inp = app.screen.query_one("#f-train-learning_rate Input")
        inp.focus()
        await type_into(pilot, "fast")
        await pilot.press("ctrl+n")
        err = app.screen.query_one("#step-error")
        text = str(err.render())
        assert text.startswith("✗ train.learning_rate") and len(text) > 70, text
        shown = " ".join(ln.strip() for ln in _lines(err))
        assert shown.split() == text.split(), (shown, text)  # every word on screen


@sync
async def test_review_says_when_the_run_name_is_taken_and_the_default_is_a_timestamp(in_tmp):
    import re

    from tuneforge.tui.app import TuneforgeApp

    (in_tmp / "runs" / "uxrun").mkdir(parents=True)
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        assert re.fullmatch(r"run-\d{8}-\d{6}", app.wizard.draft["name"])  # as its help says: a timestamp
        await drive_wizard(pilot, str(shared("identity.json")), name="uxrun", stop_at="ReviewStep")
        note = str(app.screen.query_one("#name-note").render())
        assert "runs/uxrun exists" in note and "runs/uxrun-2" in note, note
        await type_into(pilot, "fresh")
        await wait_for(pilot, lambda: str(app.screen.query_one("#name-note").render()) == "", 5, "the note to go")
