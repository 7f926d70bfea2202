"""The wizard's helpers on real files: model metadata, suggestions, recipe YAML paths,
and the command palette and estimate colours in the running app."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import shared
from tui_helpers import sync, wait_for, wait_screen


def test_model_metadata_without_weights(tiny_model_dir, tmp_path):
    from tuneforge.tui import modelinfo

    info = modelinfo.inspect(str(tiny_model_dir))
    assert info.problem is None and info.kind == "local"
    assert info.params == 3_219_776  # exact, from the safetensors header
    assert info.context_length == 2048 and info.chat_template.startswith("present")
    (tmp_path / "nohf").mkdir()
    assert "config.json" in modelinfo.inspect(str(tmp_path / "nohf")).problem
    assert "does not exist" in modelinfo.inspect("./missing").problem
    hub = modelinfo.inspect("someone/some-model")
    assert hub.kind == "hub" and hub.problem is None and "network" in hub.note
    gguf = modelinfo.embedded_gguf_path()
    if gguf is not None:
        g = modelinfo.inspect(str(gguf))
        assert g.kind == "gguf" and g.params == 134_515_008 and g.context_length == 8192
        assert g.chat_template.startswith("present")


def test_suggestions_follow_method_and_size():
    from tuneforge.tui.suggest import suggest

    assert suggest("lora", 135e6, 8192)["train.learning_rate"] == 2e-4
    assert suggest("full", 135e6, 8192)["train.learning_rate"] == 5e-5
    big = suggest("full", 7e9, 4096)
    assert big["train.learning_rate"] == 1e-5 and big["train.batch_size"] == 2 and big["train.grad_accum"] == 8
    assert suggest("lora", 135e6, 512)["data.max_length"] == 512


def test_recipe_yaml_writes_paths_relative_to_the_recipe(tmp_path, monkeypatch):
    from tuneforge.tui import draft as d

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    draft = d.new_draft()
    d.put(draft, "data.train.0.path", "data/x.jsonl")
    d.put(draft, "train.batch_size", 4)
    text = d.to_yaml(draft, tmp_path / "recipes" / "r.yaml")
    data = yaml.safe_load(text)
    assert data["data"]["train"][0]["path"] == "../data/x.jsonl"
    assert data["train"] == {"batch_size": 4} and data["method"] == "lora"
    d.put(draft, "train.batch_size", 0)
    assert "train.batch_size" in d.check(draft).errors


def _only_hit(palette) -> str | None:
    """The text of the palette's single search result (None while it is still searching)."""
    from textual.command import CommandList

    hits = palette.query_one(CommandList)
    return str(hits.get_option_at_index(0).hit.text) if hits.option_count == 1 else None


@sync
async def test_command_palette_starts_a_new_recipe(tmp_path, monkeypatch, smollm2_dir):
    from tuneforge.tui.app import TuneforgeApp

    monkeypatch.chdir(tmp_path)
    app = TuneforgeApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "RunsScreen")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        await pilot.press(*"New recipe")
        await wait_for(pilot, lambda: _only_hit(app.screen) == "New recipe", 10, "the one matching command")
        await pilot.press("enter")
        await wait_screen(pilot, "ModelStep")


@sync
async def test_estimate_panel_turns_red_when_it_does_not_fit(tmp_path, monkeypatch, smollm2_dir):
    from tuneforge.runner import estimate
    from tuneforge.tui.app import TuneforgeApp

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(estimate, "available_memory", lambda device: 64 * 2**20)  # a machine with 64 MiB free
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ModelStep")
        await wait_for(pilot, lambda: app.screen._info is not None)
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "StageStep")
        await pilot.press("ctrl+n")
        await wait_screen(pilot, "MethodStep")
        await wait_for(pilot, lambda: app.wizard.estimate is not None, 30, "estimate")
        panel = app.screen.query_one("#estimate")
        assert "does NOT fit" in str(panel.render())
        assert panel.styles.border.top[1].rgb == (255, 0, 0)
