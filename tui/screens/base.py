"""What every wizard step shares: the step bar, a scrolling body, Back/Next, validation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from .. import draft as d
from ..widgets.field import FieldEditor
from ..widgets.stepbar import STEPS, StepBar

if TYPE_CHECKING:
    from ..app import TuneforgeApp, WizardState


class WizardStep(Screen):
    """A step. Subclasses yield their widgets from `body()` and say what blocks Next in `problems()`."""

    STEP = 0
    FIELDS_PREFIXES: tuple[str, ...] = ()
    CHECK_FILES = False  # validate the files the step's fields name (e.g. model.from_run)
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", priority=True),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    WizardStep #body { padding: 0 1; }
    WizardStep #nav { height: auto; max-height: 6; padding: 0 1; }
    WizardStep #step-error { width: 1fr; height: auto; color: $text-error; }
    WizardStep #nav Button { margin-left: 1; }
    WizardStep .hint { color: $text-muted; }
    WizardStep .panel { border: round $primary; height: auto; padding: 0 1; }
    """

    app: "TuneforgeApp"

    @property
    def state(self) -> "WizardState":
        return self.app.wizard

    @property
    def draft(self) -> dict:
        return self.app.wizard.draft

    def compose(self) -> ComposeResult:
        yield StepBar(self.STEP)
        with VerticalScroll(id="body", can_focus=False):  # a focusable part (e.g. the examples) scrolls it
            yield from self.body()
        with Horizontal(id="nav"):
            yield Static("", id="step-error")
            yield Button("Back" if self.STEP else "Close", id="back", compact=True)
            yield Button("Next ▸" if self.STEP < len(STEPS) - 1 else "Finish ▸", id="next", variant="primary", compact=True)
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        """Focus the step's first control before the first paint, so keys typed as soon as the
        step appears (type-ahead, keys sent by a terminal multiplexer, a slow SSH link) land in it."""
        if self.AUTO_FOCUS:
            for widget in self.query(self.AUTO_FOCUS):
                if widget.focusable:
                    widget.focus(scroll_visible=False)
                    break

    def editor(self, path: str, **kw) -> FieldEditor:
        return FieldEditor(path, d.get(self.draft, path), **kw)

    # -- validation --------------------------------------------------------------------------
    def schema_errors(self) -> dict[str, str]:
        return d.check(self.draft, self.CHECK_FILES).errors_under(*self.FIELDS_PREFIXES) if self.FIELDS_PREFIXES else {}

    def problems(self) -> list[str]:
        """What must be fixed before Next (field errors are also shown under their field)."""
        return [f"{k}: {v}" for k, v in self.schema_errors().items()]

    def refresh_errors(self) -> dict[str, str]:
        errors = self.schema_errors()
        for ed in self.query(FieldEditor):
            ed.set_error(errors.get(ed.path))
        return errors

    def on_field_editor_changed(self, event: FieldEditor.Changed) -> None:
        if event.value == d.get(self.draft, event.path) or (event.value is None and d.get(self.draft, event.path) is None):
            return  # e.g. a Select announcing its initial value
        d.put(self.draft, event.path, event.value)
        self.state.touched.add(event.path)
        self.refresh_errors()
        self.query_one("#step-error", Static).update("")
        self.draft_changed(event.path)

    def draft_changed(self, path: str) -> None:
        """Hook: a field changed (e.g. to refresh an estimate)."""

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            event.stop()
            self.action_next()
        elif event.button.id == "back":
            event.stop()
            self.action_back()

    def sync_fields(self) -> None:
        """Copy every field's on-screen value into the draft before checking it."""
        for ed in self.query(FieldEditor):
            value = ed.current_value()
            if value != d.get(self.draft, ed.path):
                d.put(self.draft, ed.path, value)
                self.state.touched.add(ed.path)

    def action_next(self) -> None:
        self.sync_fields()
        self.refresh_errors()
        problems = self.problems()
        if problems:
            self.query_one("#step-error", Static).update("✗ " + problems[0])
            self.app.bell()
            return
        self.app.wizard_goto(self.STEP + 1)

    def action_back(self) -> None:
        self.app.pop_screen()

    def on_screen_resume(self) -> None:
        self.refresh_errors()
