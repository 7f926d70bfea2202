"""`?`: what every key does, on one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# tuneforge — keys

**Everywhere**: `f1` (or `?` when no text field has focus) help · `ctrl+p` command palette · `ctrl+q` quit ·
`tab` / `shift+tab` move between fields · `enter` choose / press.

**Runs**: `n` new recipe · `o` open a recipe to edit · `enter` monitor the selected run · `r` resume a
stopped, failed or dead run from its last checkpoint (detached) · `f5` refresh.

**Wizard** (Model → Stage → Method → Dataset → Hyperparameters → Review): `ctrl+n` next (checks the step
first) · `esc` back · `enter` in a field = next. The last step: `ctrl+r` save + run now,
`ctrl+t` save + run detached (survives SSH disconnects and quitting the app), `ctrl+s` save only.
An existing file is never replaced without asking.

**Monitor**: `s` stop the run (it saves a checkpoint, then exits) · `r` resume it from that checkpoint ·
`k` save a checkpoint now · `c` chat with the run (when it has weights; `esc` comes back) ·
`esc` back to the runs.

Everything the app does is a file or a command you can also use by hand:
recipes are YAML (`tuneforge validate recipe.yaml`), runs are folders under `runs/`
(`tuneforge train recipe.yaml`).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 78; max-height: 22; border: thick $primary; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
