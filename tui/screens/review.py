"""Step 5: the recipe as it will be written, the equivalent command, where the file goes, and
how to start it: run now (a background process + the monitor), run detached (survives SSH and
closing the app; services picks how), or save only."""

from __future__ import annotations

import copy
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, Static

from .. import draft as d
from ..chain import chain_line
from tuneforge.runner.services import run_name_for, train_command

from .base import WizardStep
from ..widgets.field import FieldInput
from ..widgets.readable import Readable
from .dialogs import Confirm
from .method import estimate_draft, estimate_lines


class ReviewStep(WizardStep):
    STEP = 5
    AUTO_FOCUS = "FieldEditor Input"
    FIELDS_PREFIXES = ("name",)
    BINDINGS = [
        Binding("ctrl+r", "finish('now')", "Save+run", priority=True),
        Binding("ctrl+t", "finish('detached')", "Save+detach", priority=True),
        Binding("ctrl+s", "finish('save')", "Save only", priority=True),
    ]
    DEFAULT_CSS = """
    ReviewStep #where { height: auto; margin: 0 0 1 0; }
    ReviewStep #where Label { width: 18; text-style: bold; }
    ReviewStep #recipe-path { width: 1fr; }
    ReviewStep #finish { height: auto; margin: 1 0 0 0; }
    ReviewStep #finish Button { margin-right: 2; }
    """

    def body(self) -> ComposeResult:
        yield self.editor("name", title="run name")
        yield Static("", id="name-note")
        with Horizontal(id="where"):
            yield Label("recipe file")
            yield FieldInput(self.state.recipe_path_text(), id="recipe-path", compact=True)
        yield Static("", id="command")
        yield Static("", id="chain")
        yield Static("estimating…", id="review-estimate")
        yield Readable("", id="yaml", classes="panel")
        with Horizontal(id="finish"):
            yield Button("Save + run now", id="run-now", variant="success", compact=True)
            yield Button("Save + run detached (survives SSH)", id="run-detached", compact=True)
            yield Button("Save only", id="save-only", compact=True)

    def on_mount(self) -> None:
        self.update_review()
        self._estimate(copy.deepcopy(self.draft))

    @work(thread=True, exclusive=True, group="estimate", exit_on_error=False)
    def _estimate(self, draft: dict) -> None:
        est, problem = estimate_draft(draft)
        self.app.call_from_thread(self._show_estimate, est, problem)

    def _show_estimate(self, est, problem: str) -> None:
        lines = estimate_lines(est) if est is not None else [problem]
        self.query_one("#review-estimate", Static).update(Text.assemble(("estimate ", "bold"), "  ".join(lines)))

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.update_review()

    def draft_changed(self, path: str) -> None:
        if path == "name" and not self.state.path_touched:
            inp = self.query_one("#recipe-path", Input)
            with inp.prevent(Input.Changed):
                inp.value = self.state.recipe_path_text()
        self.update_review()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "recipe-path":
            if event.value.strip() == self.state.recipe_path_text():
                return  # the value shown at mount or set by a name change, not an edit
            self.state.recipe_path = Path(event.value.strip()) if event.value.strip() else None
            self.state.path_touched = True
            self.update_review()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "recipe-path":
            event.stop()

    def update_review(self) -> None:
        target = self.state.target_path()
        cmd = self.query_one("#command", Static)
        yaml_box = self.query_one("#yaml", Readable)
        try:
            text = d.to_yaml(self.draft, target)
        except Exception as exc:  # noqa: BLE001 - shown to the user, who goes back to fix it
            yaml_box.update(f"[red]{getattr(exc, 'message', exc)}[/]")
            return
        exists = " (exists: you will be asked before it is replaced)" if target.exists() else ""
        self._name_note()
        cmd.update(f"[b]writes[/] {target}{exists}\n[b]command[/] {train_command(d.nice_path(target), self.draft.get('distributed'))}")
        self.query_one("#chain", Static).update(Text.assemble(("chain   ", "bold"), chain_line(self.draft)))
        yaml_box.update(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))

    def _name_note(self) -> None:
        """Say when the run name is taken and which name the run will get instead."""
        name = self.draft.get("name") or ""
        runs_dir = Path(d.get(self.draft, "output.runs_dir") or "runs")
        actual = run_name_for(name, runs_dir, bool(d.get(self.draft, "output.overwrite"))) if name else name
        note = self.query_one("#name-note", Static)
        note.update(Text(f"{runs_dir / name} exists: this run will be {runs_dir / actual} "
                         "(change the name to choose another)", style="yellow") if actual != name else "")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        mode = {"run-now": "now", "run-detached": "detached", "save-only": "save"}.get(event.button.id or "")
        if mode:
            event.stop()
            self.action_finish(mode)
        else:
            super().on_button_pressed(event)

    def action_next(self) -> None:
        self.action_finish("save")

    def action_finish(self, mode: str) -> None:
        self.sync_fields()
        self.refresh_errors()
        problems = self.problems()
        if not problems and d.check(self.draft).recipe is None:
            problems = [f"{k}: {v}" for k, v in d.check(self.draft).errors.items()]
        if problems:
            self.query_one("#step-error", Static).update("✗ " + problems[0])
            return
        target = self.state.target_path()
        if target.exists():
            def answered(yes: bool | None) -> None:
                if yes:
                    self.app.finish_wizard(target, mode)

            self.app.push_screen(Confirm(f"{target} exists. Replace it?"), answered)
            return
        self.app.finish_wizard(target, mode)
