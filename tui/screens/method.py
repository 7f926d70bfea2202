"""Step 2: how to train — the methods the schema allows, their main options, and whether it fits."""

from __future__ import annotations

import copy

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, RadioSet, Static

from tuneforge.runner import services

from .. import draft as d
from ..workers import LOAD_LOCK, explain
from ..widgets.pickers import Choice
from .base import WizardStep

METHOD_HELP = {
    "full": "every weight trains: best quality, most memory",
    "lora": "small low-rank adapters on a frozen model: little memory, fast",
    "qlora": "LoRA on a 4-bit quantized base: the least memory (CUDA only)",
    "freeze": "only the last layers train; the rest stays frozen",
}


class MethodStep(WizardStep):
    STEP = 2
    AUTO_FOCUS = "RadioSet"
    FIELDS_PREFIXES = ("method", "lora", "freeze", "qlora", "quantization")

    def body(self) -> ComposeResult:
        current = self.draft.get("method") or d.field_spec("method").default
        yield Label("Method (↑/↓ then Enter or space)", classes="hint")
        with RadioSet(id="methods"):
            for m in d.method_choices():
                yield Choice(f"{m:<7} {METHOD_HELP.get(m, '')}", value=m == current, name=m)
        yield Static("estimating…", id="estimate", classes="panel")
        sections = sorted({s for m in d.method_choices() for s in d.method_sections(m)})
        for section in sections:
            with Vertical(id=f"opts-{section}", classes="method-options"):
                yield Label(f"{section} options", classes="hint")
                for path in d.section_fields(section):
                    yield self.editor(path)

    def on_mount(self) -> None:
        self._show_sections()
        self.update_estimate()

    def _show_sections(self) -> None:
        wanted = set(d.method_sections(self.draft.get("method", "lora")))
        for box in self.query(".method-options"):
            box.display = (box.id or "").removeprefix("opts-") in wanted

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.draft["method"] = event.pressed.name
        self.state.touched.add("method")
        self._show_sections()
        self.refresh_errors()
        self.update_estimate()

    def draft_changed(self, path: str) -> None:
        self.update_estimate()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.update_estimate()

    def update_estimate(self) -> None:
        self.query_one("#estimate", Static).update("estimating…")
        self._estimate_worker(copy.deepcopy(self.draft))

    @work(thread=True, exclusive=True, group="estimate", exit_on_error=False)
    def _estimate_worker(self, probe: dict) -> None:
        train = (probe.get("data") or {}).get("train") or [{}]
        if not train or not train[0].get("path"):
            probe.setdefault("data", {})["train"] = [{"path": "(dataset not chosen yet)"}]
        est, problem = estimate_draft(probe)
        self.app.call_from_thread(self._show_estimate, est, problem)

    def _show_estimate(self, est, problem: str = "") -> None:
        panel = self.query_one("#estimate", Static)
        if est is None:
            panel.update(f"estimate: {problem}")
            panel.styles.border = ("round", "yellow")
            return
        lines = estimate_lines(est) + est.stage_lines()  # what the stage adds: two sequences per pair, the reference, ...
        panel.update("\n".join(lines + [f"advice: {a}" for a in est.advice]))
        panel.styles.border = ("round", "green" if est.fits else "red")
        panel.styles.color = None if est.fits else "red"
        self.state.estimate = est


def estimate_draft(draft: dict):
    """(Estimate, '') or (None, why there is none) for a draft; never raises (an estimate is advice)."""
    checked = d.check(draft)
    if checked.recipe is None:
        return None, "fix the options below first"
    try:
        with LOAD_LOCK:  # the estimate may load a tokenizer: never beside the data preview's
            return services.estimate(checked.recipe), ""
    except Exception as exc:  # noqa: BLE001 - e.g. a hub id not downloaded yet: say why there is none
        return None, "no estimate: " + explain(exc, "estimating").removeprefix("estimating: ")


def estimate_lines(est) -> list[str]:
    lines = [f"memory: ~{gib(est.peak_bytes)} needed of {gib(est.available_bytes)} free"
             + ("" if est.fits else "  — does NOT fit")]
    if est.seconds_per_epoch:
        from tuneforge.runner.progress import fmt_duration

        lines.append(f"time: ~{fmt_duration(est.seconds_per_epoch)} per epoch")
    else:
        lines.append("time: known once the dataset is chosen")
    return lines


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
