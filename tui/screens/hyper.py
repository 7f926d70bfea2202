"""Step 4: hyperparameters. Defaults follow the method and the model's size; every input is
checked by the schema as you type; rarely changed settings sit in a collapsed 'advanced' box."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Collapsible, Label

from tuneforge.runner import services

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
GPU_FIELDS = ["distributed.nproc", "distributed.strategy", "distributed.offload"]  # shown with 2+ GPUs


class HyperStep(WizardStep):
    STEP = 4
    AUTO_FOCUS = "FieldEditor Input"
    FIELDS_PREFIXES = ("train", "data.max_length", "data.eval_split", "data.train_on_prompt", "seed", "precision",
                       "device", "output", "distributed")

    def body(self) -> ComposeResult:
        self.apply_suggestions()
        yield Label("Suggested for this method and model size; change any value", classes="hint")
        for path in MAIN:
            yield self.editor(path)
        gpus = self._gpus()
        if len(gpus) > 1:  # several GPUs: train on all of them, and choose how they share the model
            yield Label(f"{len(gpus)} GPUs: {', '.join(sorted(set(gpus)))}; the run launches through accelerate",
                        classes="hint", id="gpus")
            for path in GPU_FIELDS:
                yield self.editor(path)
        with Collapsible(title="advanced", collapsed=True, id="advanced"):
            for path in ADVANCED:
                yield self.editor(path)

    def _gpus(self) -> list[str]:
        if not hasattr(self, "_gpu_names"):
            self._gpu_names = services.visible_gpus()
        return self._gpu_names

    def apply_suggestions(self) -> None:
        """Fill untouched fields from the method/size suggestions (never overrides your input)."""
        info = self.state.model_info
        values = suggest(self.draft.get("method", "lora"), info.params if info else None,
                         info.context_length if info else None, self.draft.get("stage") or "sft")
        if len(self._gpus()) > 1:
            values["distributed.nproc"] = len(self._gpus())
        for path, value in values.items():
            if path not in self.state.touched:
                d.put(self.draft, path, value)

    def on_screen_resume(self) -> None:
        self.apply_suggestions()
        for ed in self.query(FieldEditor):
            ed.set_value(d.get(self.draft, ed.path))
        super().on_screen_resume()
