"""Step 1: which base model. Reads metadata only (no torch) so the wizard opens instantly."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.widgets import Collapsible, Label, Static

from .. import modelinfo
from ..widgets.field import FieldEditor
from ..widgets.pickers import ModelPicker
from ..workers import explain
from .base import WizardStep


class ModelStep(WizardStep):
    STEP = 0
    AUTO_FOCUS = "ModelPicker"
    FIELDS_PREFIXES = ("model",)

    def body(self) -> ComposeResult:
        yield Label("Models on this machine (↑/↓, Enter to choose) — or type below", classes="hint")
        yield ModelPicker(modelinfo.discover(), id="models")
        yield self.editor("model.name_or_path", title="model")
        yield Static("", id="model-info", classes="panel")
        with Collapsible(title="advanced", collapsed=True):
            yield self.editor("model.chat_template")
            yield self.editor("model.revision")
            yield self.editor("model.trust_remote_code")

    def on_mount(self) -> None:
        self._info: modelinfo.ModelInfo | None = None
        self._next_when_ready = False
        self.inspect_model(d_get(self.draft))

    def on_model_picker_chosen(self, event: ModelPicker.Chosen) -> None:
        self.query_one("#f-model-name_or_path", FieldEditor).set_value(event.value)
        self.draft["model"]["name_or_path"] = event.value
        self.state.touched.add("model.name_or_path")
        self._next_when_ready = True  # Enter on a model chooses it and goes on once its details are read
        self.inspect_model(event.value)

    def draft_changed(self, path: str) -> None:
        if path == "model.name_or_path":
            self.inspect_model(d_get(self.draft))

    @work(thread=True, exclusive=True, group="model-info", exit_on_error=False)
    def inspect_model(self, name: str) -> None:
        try:
            info = modelinfo.inspect(name or "")
        except Exception as exc:  # noqa: BLE001 - whatever the name holds: a line on the step, not a crash
            info = modelinfo.ModelInfo((name or "").strip(), "unknown", problem=explain(exc, "reading the model failed"))
        self.app.call_from_thread(self._show_info, info)

    def _show_info(self, info: modelinfo.ModelInfo) -> None:
        if info.source != d_get(self.draft).strip() and self._info is not None and self._info.source == d_get(self.draft).strip():
            return  # a slower, older lookup: keep the current one
        self._info = info
        self.state.model_info = info
        panel = self.query_one("#model-info", Static)
        panel.update("\n".join(info.lines()))
        panel.set_class(bool(info.problem), "-error")
        panel.styles.border = ("round", "red" if info.problem else "green")
        if getattr(self, "_next_when_ready", False) and info.source == d_get(self.draft).strip():
            self._next_when_ready = False
            if not info.problem:
                self.action_next()

    def problems(self) -> list[str]:
        out = super().problems()
        if self._info is None or self._info.source != d_get(self.draft):
            self._next_when_ready = True  # Next was pressed early: go on once the details arrive
            out.append("reading the model's details…")
        elif self._info.problem:
            out.append(self._info.problem)
        return out


def d_get(draft: dict) -> str:
    return (draft.get("model") or {}).get("name_or_path") or ""
