"""The home screen: every run under the runs folder, refreshed every two seconds."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..runlist import list_runs

COLUMNS = ("name", "state", "step", "loss", "elapsed", "started")
STATE_STYLE = {"running": "bold cyan", "finished": "green", "failed": "bold red", "dead": "bold red", "stopped": "yellow"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("n", "app.new_recipe", "New recipe"),
        Binding("o", "app.open_recipe", "Open recipe"),
        Binding("enter", "monitor", "Monitor", show=True),
        Binding("r", "resume", "Resume"),
        Binding("f5", "refresh_runs", "Refresh", show=False),
        Binding("e", "eval", "Eval", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    RunsScreen #empty { padding: 1 2; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #eval-line { height: auto; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        yield Static(f"tuneforge · runs in {self.runs_dir}", id="title")
        yield Static("", id="empty")
        table = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="eval-line")  # the selected run's latest eval (screens/eval.py)
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh_runs()
        self.set_interval(2.0, self.action_refresh_runs)

    def action_refresh_runs(self) -> None:
        from rich.text import Text

        rows = list_runs(self.runs_dir)
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for row in rows:
            cells = list(row.cells())
            cells[1] = Text(cells[1], style=STATE_STYLE.get(row.state, ""))
            table.add_row(*cells, key=str(row.path))
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1))
        empty = self.query_one("#empty", Static)
        empty.display = not rows
        empty.update("No runs yet. Press [b]n[/] to create a recipe, [b]o[/] to open one, [b]f1[/] for help.")
        self._show_eval()

    def _selected(self) -> Path | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return Path(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def _show_eval(self) -> None:
        from tuneforge.runner.services import eval_headline

        path = self._selected()
        line = eval_headline(path) if path else ""
        widget = self.query_one("#eval-line", Static)
        widget.display = bool(line)
        widget.update(f"eval: {line}   (e: evaluate)" if line else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_eval()

    def action_eval(self) -> None:
        path = self._selected()
        if path is not None:
            from .eval import EvalScreen

            self.app.push_screen(EvalScreen(path))

    def action_monitor(self) -> None:
        path = self._selected()
        if path is not None:
            self.app.open_monitor(path)

    def action_resume(self) -> None:
        """Continue the selected stopped/failed/dead run from its last checkpoint, detached, and
        follow it in the monitor (as `tuneforge resume RUN --detach`)."""
        from tuneforge.runner import services

        path = self._selected()
        if path is None:
            return
        try:
            handle = services.resume(path, "detached", runs_dir=self.runs_dir)
        except Exception as exc:  # noqa: BLE001 - still running, finished, no checkpoint: say why
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.app.open_monitor(handle)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.app.open_monitor(Path(str(event.row_key.value)))
