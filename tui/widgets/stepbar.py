"""The wizard's progress line: where you are, what comes next."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

STEPS = ("Model", "Stage", "Method", "Dataset", "Hyperparameters", "Review")


class StepBar(Static):
    DEFAULT_CSS = """
    StepBar { height: 1; background: $panel; padding: 0 1; }
    """

    def __init__(self, current: int) -> None:
        super().__init__(self._render_steps(current))

    @staticmethod
    def _render_steps(current: int) -> Text:
        out = Text("new recipe  ", style="bold")
        for i, name in enumerate(STEPS):
            if i:
                out.append(" › ", style="dim")
            style = "bold reverse" if i == current else ("" if i < current else "dim")
            out.append(f"{i + 1} {name if len(name) < 10 else name[:5]}", style=style)
        return out
