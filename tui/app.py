"""The tuneforge app: the runs table as home, the recipe wizard, and the run monitor.

Screens write recipes and reach runs only through tuneforge.runner.services (launch, open, list,
stop); training always runs in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from . import draft as d
from .modelinfo import ModelInfo


@dataclass
class WizardState:
    """The recipe being edited and what the steps learned along the way."""

    draft: dict[str, Any] = field(default_factory=d.new_draft)
    recipe_path: Path | None = None  # where the recipe goes (None: <name>.yaml here)
    path_touched: bool = False
    touched: set[str] = field(default_factory=set)  # fields the user set: suggestions leave them alone
    model_info: ModelInfo | None = None
    estimate: Any = None

    @classmethod
    def from_file(cls, path: Path) -> "WizardState":
        draft = d.draft_from_file(path)
        touched = {f"{section}.{key}" for section in ("train", "data") for key in (draft.get(section) or {})}
        touched |= {k for k in ("stage", "method", "seed", "precision", "device", "name") if k in draft}
        return cls(draft, path, True, touched)

    def target_path(self) -> Path:
        if self.recipe_path is not None:
            return self.recipe_path.expanduser()
        return Path(f"{self.draft.get('name') or 'recipe'}.yaml")

    def recipe_path_text(self) -> str:
        return str(self.target_path())


class TuneforgeApp(App):
    TITLE = "tuneforge"
    BINDINGS = [
        Binding("question_mark", "help", "Help", show=False),
        Binding("f1", "help", "Help"),  # shown on every step: '?' types into a focused field
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]
    CSS = """
    Screen { background: $background; }
    """

    def __init__(self, start: str = "runs", edit: Path | None = None, runs_dir: Path | None = None) -> None:
        super().__init__()
        self.start, self.edit = start, edit
        self.runs_dir = runs_dir or Path("runs")
        self.wizard = WizardState()

    def on_mount(self) -> None:
        from .screens.runs import RunsScreen

        self.push_screen(RunsScreen(self.runs_dir))
        if self.edit is not None:
            try:
                self.wizard = WizardState.from_file(self.edit)
            except Exception as exc:  # noqa: BLE001 - a user's file: say what is wrong, keep the app
                self.notify(getattr(exc, "message", str(exc)), severity="error")
                return
            self.wizard_goto(0)
        elif self.start == "new":
            self.action_new_recipe()

    # -- wizard --------------------------------------------------------------------------------
    def wizard_steps(self) -> list[type[Screen]]:
        from .screens.dataset import DatasetStep
        from .screens.hyper import HyperStep
        from .screens.method import MethodStep
        from .screens.model import ModelStep
        from .screens.review import ReviewStep
        from .screens.stage import StageStep

        return [ModelStep, StageStep, MethodStep, DatasetStep, HyperStep, ReviewStep]

    def wizard_goto(self, index: int) -> None:
        self.push_screen(self.wizard_steps()[index]())

    def action_new_recipe(self) -> None:
        self.wizard = WizardState()
        self.wizard_goto(0)

    def action_open_recipe(self) -> None:
        from .screens.dialogs import OpenRecipe

        def opened(path: str | None) -> None:
            if path:
                try:
                    self.wizard = WizardState.from_file(Path(path).expanduser())
                except Exception as exc:  # noqa: BLE001 - a user's file: say what is wrong
                    self.notify(getattr(exc, "message", str(exc)), severity="error")
                    return
                self.wizard_goto(0)

        self.push_screen(OpenRecipe(), opened)

    def _close_wizard(self) -> None:
        from .screens.base import WizardStep

        while len(self.screen_stack) > 1 and isinstance(self.screen, WizardStep):
            self.pop_screen()

    def finish_wizard(self, target: Path, mode: str) -> None:
        """Write the recipe (the caller has asked about overwriting), then run it or not.
        mode: "save", "now" (a background process, output in <run>/console.log) or "detached"
        (outlives the app and the SSH connection)."""
        from tuneforge.runner import services

        text = d.to_yaml(self.wizard.draft, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self._close_wizard()
        if mode == "save":
            self.notify(f"saved {target}. Start it with: {services.train_command(target)}", timeout=8)
            return
        try:
            recipe = services.load_recipe(target)  # exactly what `tuneforge train <target>` would run
            handle = services.launch(recipe, "detached" if mode == "detached" else "background")
        except Exception as exc:  # noqa: BLE001 - shown to the user; the recipe is saved anyway
            self.notify(f"saved {target}, but could not start it: {getattr(exc, 'message', exc)}", severity="error")
            return
        if mode == "detached":
            self.notify(handle.instructions(), timeout=12)
        self.open_monitor(handle)

    # -- runs ----------------------------------------------------------------------------------
    def open_monitor(self, run) -> None:
        """The monitor on a RunHandle (one the app launched) or on a run directory's path."""
        from tuneforge.runner import services

        from .screens.monitor import MonitorScreen

        handle = run if isinstance(run, services.RunHandle) else services.open_run(Path(run), self.runs_dir)
        self.push_screen(MonitorScreen(handle))

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New recipe", "Start the wizard with a fresh recipe", self.action_new_recipe)
        yield SystemCommand("Open recipe", "Edit an existing recipe file in the wizard", self.action_open_recipe)
        yield SystemCommand("Help", "Keys and how the app works", self.action_help)
