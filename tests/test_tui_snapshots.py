"""SVG snapshots of every wizard step (and the home/help screens) at 80x24.

Machine-dependent inputs are pinned so the pictures are the same everywhere: the working directory
holds one data file, only the embedded model is listed, free memory reads as 16 GiB.
Update after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import shutil

import pytest

from conftest import shared
from tui_helpers import type_into, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def pinned(tmp_path, monkeypatch, smollm2_dir):
    from tuneforge.runner import device, estimate, services
    from tuneforge.tui import draft, modelinfo

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(shared("alpaca_zh_demo.json"), project / "data" / "alpaca_zh_demo.json")
    monkeypatch.chdir(project)
    monkeypatch.setattr(modelinfo, "known_model_dirs", lambda: [])
    monkeypatch.setattr(draft, "default_run_name", lambda: "run-20260101-120000")
    monkeypatch.setattr(services, "command_name", lambda: "tuneforge")  # not this machine's venv path
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub-cache"))
    # a machine-independent estimate: 16 GiB free, fp32 on CPU at 100 GFLOP/s
    monkeypatch.setattr(estimate, "available_memory", lambda dev: 16 * 2**30)
    monkeypatch.setattr(estimate, "matmul_flops", lambda *a, **kw: 100e9)
    monkeypatch.setattr(device, "choose", lambda *a, **kw: device.Placement("cpu", "fp32", "pinned for snapshots"))
    return project


def _app(start="new"):
    from tuneforge.tui.app import TuneforgeApp

    return TuneforgeApp(start=start)


async def _settle(pilot):
    """Wait until the app's own workers are done and what they posted is painted (the file tree's
    loader runs for ever, so it is left out); a finished worker may start another, hence the loop."""
    app = pilot.app

    def busy():
        return [w for w in app.workers if w.group != "_loader" and not w.is_finished]

    for _ in range(20):
        if busy():
            await wait_for(pilot, lambda: not busy(), 120, "the app's workers")
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        if not busy():
            return
    raise AssertionError(f"workers never settled: {busy()}")


async def _to_step(pilot, index: int):
    """Walk the wizard to step `index` (0 = Model) with the keyboard, choosing the Chinese demo data."""
    app = pilot.app
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelStep")
    await wait_for(pilot, lambda: app.screen._info is not None)
    for i in range(index + 1):
        if i == 3:  # Dataset: type the file's path, wait for the preview
            await pilot.press("tab")
            await type_into(pilot, "data/alpaca_zh_demo.json")
            await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 120)
            if index == 3:
                await pilot.press("shift+tab")  # back to the file tree, as a person would look at it
        await _settle(pilot)
        if i < index:
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: len(app.screen_stack) == i + 4)
    await _settle(pilot)
    await _still_cursor(pilot)


async def _still_cursor(pilot):
    """A blinking cursor would make the picture depend on timing."""
    from textual.widgets import Input

    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.pause()  # the message queue drained: the still cursor is painted


@pytest.mark.parametrize("step", [0, 1, 2, 3, 4, 5], ids=["model", "stage", "method", "dataset", "hyper", "review"])
def test_wizard_step_snapshot(step, pinned, snap_compare):
    async def run_before(pilot):
        await _to_step(pilot, step)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


def test_dataset_examples_snapshot(pinned, snap_compare):
    """The rendered examples with trained tokens highlighted (Chinese text aligned)."""

    async def run_before(pilot):
        await _to_step(pilot, 3)
        examples = pilot.app.screen.query_one("#examples")
        examples.scroll_visible(animate=False)
        await wait_for(pilot, lambda: examples.region.y < 24 and examples.region.height > 0, 10, "examples in view")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run_before)


def test_runs_home_and_help_snapshot(pinned, snap_compare):
    async def run_before(pilot):
        await _settle(pilot)
        await pilot.press("question_mark")
        await _settle(pilot)

    assert snap_compare(_app("runs"), terminal_size=(80, 24), run_before=run_before)
