"""Step 2: which training stage (sft, dpo, ...), its options with their defaults, and whether the
run starts from an earlier run's result. Choices, help and defaults come from the recipe models
(runner/recipe_stages.py), so a new stage or option appears here without wizard code."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, RadioSet, Static

from tuneforge.runner.recipe_stages import STAGE_HELP, STAGES

from .. import draft as d
from ..chain import chain_line
from ..widgets.pickers import Choice
from .base import WizardStep

# The option blocks' nested fields the wizard edits too (section_fields lists scalars only).
NESTED = {"dpo": ("dpo.reference.kind", "dpo.reference.model"), "kto": ("kto.reference.kind", "kto.reference.model")}


def stage_sections() -> list[str]:
    """Stages with an options block in the recipe (sft has none)."""
    return [s for s in STAGES if s in d.Recipe.model_fields]


class StageStep(WizardStep):
    STEP = 1
    AUTO_FOCUS = "RadioSet"
    FIELDS_PREFIXES = ("stage", "model.from_run", *STAGES)
    CHECK_FILES = True  # model.from_run must name a run with weights

    def body(self) -> ComposeResult:
        current = self.draft.get("stage") or d.field_spec("stage").default
        yield Label("Stage (↑/↓ then Enter or space)", classes="hint")
        with RadioSet(id="stages"):
            for s in STAGES:
                yield Choice(f"{s:<6} {short(STAGE_HELP[s])}", value=s == current, name=s)
        yield Static("", id="stage-help", classes="panel")
        yield self.editor("model.from_run", title="start from run")
        yield Static("", id="chain", classes="hint")
        for section in stage_sections():
            with Vertical(id=f"opts-{section}", classes="stage-options"):
                yield Label(f"{section} options (defaults shown; change any)", classes="hint")
                for path in [*d.section_fields(section), *NESTED.get(section, ())]:
                    yield self.editor(path)

    def on_mount(self) -> None:
        self._show_stage()

    def _show_stage(self) -> None:
        stage = self.draft.get("stage") or "sft"
        for box in self.query(".stage-options"):
            box.display = (box.id or "").removeprefix("opts-") == stage
        kinds = d.STAGE_DATA.get(stage, "")
        self.query_one("#stage-help", Static).update(f"{stage}: {STAGE_HELP[stage]}\ndata: {kinds}")
        self.query_one("#chain", Static).update("chain: " + chain_line(self.draft))

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        stage = event.pressed.name or "sft"
        d.set_stage(self.draft, stage)
        self.state.touched.add("stage")
        self._show_stage()
        self.refresh_errors()

    def draft_changed(self, path: str) -> None:
        self._show_stage()


def short(text: str, width: int = 62) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
