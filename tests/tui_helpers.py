"""Driving the Textual app with the keyboard in tests (Pilot): poll with deadlines, never sleep."""

from __future__ import annotations

import time


async def wait_for(pilot, predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def wait_screen(pilot, name: str, timeout: float = 30.0):
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == name, timeout, f"screen {name}")
    await pilot.pause()


async def type_into(pilot, text: str, clear: bool = True, batch: bool = False):
    """Type into the focused input like a person: clear it (end, ctrl+u), then the keys.
    batch: all keys arrive at once, as over SSH or from `tmux send-keys` (see press_batch)."""
    keys = (["end", "ctrl+u"] if clear else []) + [{" ": "space"}.get(c, c) for c in text]
    if batch:
        await press_batch(pilot, *keys)
    else:
        await pilot.press(*keys)


async def press_batch(pilot, *keys: str):
    """Keys arriving together, as `tmux send-keys End C-u 512` or a slow SSH link delivers them:
    all are queued before the first is handled (pilot.press waits for each one)."""
    from textual import events

    for key in keys:
        char = key if len(key) == 1 else {"space": " "}.get(key)
        pilot.app.post_message(events.Key(key, char))
    await pilot.pause()


def screen_text(app) -> str:
    """Everything the current screen shows, as plain text (for assertions)."""
    from textual.widgets import Static

    parts = []
    for w in app.screen.query(Static):
        try:
            parts.append(str(w.render()))
        except Exception:  # noqa: BLE001 - some widgets render only when mounted/sized
            pass
    return "\n".join(parts)


async def pick_radio(pilot, radios, choices: list[str], value: str):
    """Move a RadioSet's highlight with ↓ (keys only) until it is on `value`, then Enter."""
    target = choices.index(value)
    for _ in range(2 * len(choices)):
        if radios._selected == target:
            break
        await pilot.press("down")
    await pilot.press("enter")


async def drive_wizard(pilot, data_path: str, *, model: str | None = None, method: str | None = None,
                       max_steps: str | None = None, max_samples: str | None = None, name: str = "my-run",
                       finish: str = "ctrl+s", stage: str | None = None, from_run: str | None = None,
                       stop_at: str | None = None, batch: bool = False):
    """Model → Stage → Method → Dataset → Hyperparameters → Review with keys only.
    stop_at: return once that step is filled in (its Next not pressed). batch: every text typed
    arrives in one batch of keys."""
    app = pilot.app
    await wait_screen(pilot, "ModelStep")
    if model is not None:
        await pilot.press("tab")  # model list -> the model input
        await type_into(pilot, model, batch=batch)
    await wait_for(pilot, lambda: app.screen._info is not None and app.screen._info.source == (model or "smollm2-135m"),
                   30, "model details")
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "StageStep")
    if stage is not None:
        from tuneforge.runner.recipe_stages import STAGES

        await pick_radio(pilot, app.screen.query_one("#stages"), list(STAGES), stage)
        await wait_for(pilot, lambda: app.wizard.draft.get("stage") == stage, 5, f"stage {stage}")
    if from_run is not None:
        await pilot.press("tab")  # the stages -> start from run
        await type_into(pilot, from_run, batch=batch)
    if stop_at == "StageStep":
        return
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "MethodStep")
    if method is not None:
        from tuneforge.tui.draft import method_choices

        await pick_radio(pilot, app.screen.query_one("#methods"), method_choices(), method)
        await wait_for(pilot, lambda: app.wizard.draft["method"] == method, 5, f"method {method}")
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "DatasetStep")
    if stop_at == "DatasetStep":
        return
    await pilot.press("tab")  # file tree -> the path input
    await type_into(pilot, data_path, batch=batch)
    if max_samples is not None:
        await pilot.press("tab", "tab")  # format -> max samples
        await type_into(pilot, max_samples, batch=batch)
    await wait_for(pilot, lambda: app.screen._preview is not None and not app.screen._pending, 120, "data preview")
    if stop_at == "DatasetPreview":
        return
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "HyperStep")
    if stop_at == "HyperStep":
        return
    if max_steps is not None:
        await pilot.press("tab")  # epochs -> max steps
        await type_into(pilot, max_steps, batch=batch)
    await pilot.press("ctrl+n")
    await wait_screen(pilot, "ReviewStep")
    await type_into(pilot, name, batch=batch)  # the run name is focused first
    await pilot.pause()
    if stop_at == "ReviewStep":
        return
    await pilot.press(finish)


def sync(fn):
    """Run an async test with asyncio.run (no pytest-asyncio needed); fixtures still work."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper
