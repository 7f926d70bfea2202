"""Small modal dialogs: yes/no confirmation and 'open a recipe file'."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 64; height: auto; border: thick $primary; background: $surface; padding: 1 2; }}
{name} Horizontal {{ height: auto; margin-top: 1; }}
{name} Button {{ margin-right: 2; }}
"""


class Confirm(ModalScreen[bool]):
    """Yes/no. Keys: y / n / escape."""

    DEFAULT_CSS = DIALOG_CSS.format(name="Confirm")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="warning", compact=True)
                yield Button("No (n)", id="no", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class OpenRecipe(ModalScreen[str | None]):
    """Ask for a recipe path to edit in the wizard."""

    DEFAULT_CSS = DIALOG_CSS.format(name="OpenRecipe")
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Recipe file to edit (Enter to open, Esc to cancel)")
            yield Input(placeholder="recipe.yaml", id="path")
            yield Static("", id="problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        from pathlib import Path

        if Path(event.value).expanduser().is_file():
            self.dismiss(event.value)
        else:
            self.query_one("#problem", Static).update(f"[red]no file at '{event.value}'[/]")
