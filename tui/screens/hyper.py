"""Step 4: hyperparameters. Defaults follow the method and the model's size; every input is
checked by the schema as you type; rarely changed settings sit in a collapsed 'advanced' box."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Collapsible, Label

from .. import draft as d
from ..suggest import suggest
from ..widgets.field import FieldEditor
from .base import WizardStep

MAIN = ["train.epochs", "train.max_steps", "train.batch_size", "train.grad_accum", "train.learning_rate", "data.max_length"]
ADVANCED = [
    "train.scheduler", "train.warmup_ratio", "train.weight_decay", "train.max_grad_norm", "train.logging_steps",
    "train.save_steps", "train.eval_steps", "train.save_total_limit", "data.eval_split", "data.train_on_prompt",
    "seed", "precision", "device", "output.runs_dir",
]


class HyperStep(WizardStep):
    STEP = 4
    AUTO_FOCUS = "FieldEditor Input"
    FIELDS_PREFIXES = ("train", "data.max_length", "data.eval_split", "data.train_on_prompt", "seed", "precision",
                       "device", "output")

    def body(self) -> ComposeResult:
        self.apply_suggestions()
        yield Label("Suggested for this method and model size; change any value", classes="hint")
        for path in MAIN:
            yield self.editor(path)
        with Collapsible(title="advanced", collapsed=True, id="advanced"):
            for path in ADVANCED:
                yield self.editor(path)

    def apply_suggestions(self) -> None:
        """Fill untouched fields from the method/size suggestions (never overrides your input)."""
        info = self.state.model_info
        values = suggest(self.draft.get("method", "lora"), info.params if info else None,
                         info.context_length if info else None, self.draft.get("stage") or "sft")
        for path, value in values.items():
            if path not in self.state.touched:
                d.put(self.draft, path, value)

    def on_screen_resume(self) -> None:
        self.apply_suggestions()
        for ed in self.query(FieldEditor):
            ed.set_value(d.get(self.draft, ed.path))
        super().on_screen_resume()
