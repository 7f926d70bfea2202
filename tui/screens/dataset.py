"""Step 3: the training data — pick a file, see its format, its validation report, and three
examples exactly as training will see them (trained tokens highlighted)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Label, Static

from tuneforge.runner.recipe_stages import STAGE_KINDS

from .. import draft as d
from ..preview import TRAINED_STYLE, DataPreview, build_preview
from ..widgets.field import FieldEditor
from ..widgets.pickers import DataPicker
from ..widgets.readable import Readable
from .base import WizardStep


class DatasetStep(WizardStep):
    STEP = 3
    AUTO_FOCUS = "DataPicker"
    FIELDS_PREFIXES = ("data.train",)

    def body(self) -> ComposeResult:
        if not self.draft.get("data", {}).get("train"):
            self.draft.setdefault("data", {})["train"] = [{"path": ""}]
        stage = self.draft.get("stage") or "sft"
        yield Label("Files under the working directory (Enter to choose) — or type a path", classes="hint")
        yield Static(f"stage {stage} trains on {d.STAGE_DATA[stage]}: only such files are listed", classes="hint",
                     id="stage-kinds")
        yield DataPicker(Path.cwd(), kinds=STAGE_KINDS.get(stage), id="files")
        yield self.editor("data.train.0.path", title="file", help=False)
        yield Static("a typed path is relative to the working directory (where tuneforge started); a typed "
                     "folder is shown in the tree above", classes="hint", id="path-help")
        yield self.editor("data.train.0.format", help=False)
        yield self.editor("data.train.0.max_samples", help=False)
        yield Static("", id="data-report", classes="panel")
        yield Readable("", id="examples")

    def on_mount(self) -> None:
        self._preview: DataPreview | None = None
        self._pending = False
        self.load_preview()

    def on_data_picker_chosen(self, event: DataPicker.Chosen) -> None:
        value = d.nice_path(event.path)
        self.query_one("#f-data-train-0-path", FieldEditor).set_value(value)
        d.put(self.draft, "data.train.0.path", value)
        self.state.touched.add("data.train.0.path")
        self.refresh_errors()
        self.load_preview()

    def draft_changed(self, path: str) -> None:
        if path == "data.train.0.path":
            self._browse(d.get(self.draft, path) or "")
        if path.startswith("data.train.0"):
            self.load_preview()

    def _browse(self, typed: str) -> None:
        """A typed folder roots the file tree there (any folder, not only the working directory)."""
        folder = Path(typed).expanduser()
        if typed.strip() and folder.is_dir():
            picker = self.query_one(DataPicker)
            if picker.path != folder:
                picker.path = folder

    def load_preview(self) -> None:
        path = d.get(self.draft, "data.train.0.path") or ""
        if not path or not Path(path).expanduser().is_file():
            self._preview = None
            self.query_one("#data-report", Static).update("choose a .json or .jsonl file" if not path else f"no file at '{path}'")
            self.query_one("#examples", Readable).update("")
            return
        self._pending = True
        self.query_one("#data-report", Static).update(f"reading {path} and rendering examples…")
        spec = d.get(self.draft, "data.train.0") or {}
        self.preview_worker(self.draft.get("stage") or "sft", path, spec.get("format") or "auto", d.get(self.draft, "model.name_or_path", "smollm2-135m"),
                            d.get(self.draft, "model.chat_template") or "auto", int(d.get(self.draft, "data.max_length") or 1024),
                            bool(d.get(self.draft, "data.train_on_prompt")), spec.get("placeholders") or {},
                            spec.get("max_samples") if isinstance(spec.get("max_samples"), int) else None)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview_worker(self, stage, path, fmt, model, template, max_length, train_on_prompt, placeholders,
                       max_samples) -> None:
        preview = build_preview(path, fmt, model, template, max_length, train_on_prompt, placeholders, max_samples,
                                stage=stage)
        self.app.call_from_thread(self._show, preview)

    def _show(self, p: DataPreview) -> None:
        self._pending = False
        if p.path != (d.get(self.draft, "data.train.0.path") or ""):
            return  # an older file's preview
        self._preview = p
        head = Text()
        head.append(f"format: {p.format or '?'}", style="bold")
        if p.kind:
            head.append(f"   rows: {d.KIND_WORDS.get(p.kind, p.kind)}")
        if p.template:
            # "tokenizer + tool format json" -> "tokenizer, tools json": one line at 80 columns
            head.append(f"   template: {p.template.replace(' + tool format ', ', tools ')}")
        head.append("\n" + p.report)
        if p.problem:
            head.append(f"\nproblem: {p.problem}", style="bold red")
            if p.fix:
                head.append(f"\nfix: {p.fix}")
        report = self.query_one("#data-report", Static)
        report.update(head)
        report.styles.border = ("round", "green" if p.usable else "red")
        parts: list = []
        if p.examples:
            legend = Text("examples as the model sees them; ")
            legend.append("trained tokens", style=TRAINED_STYLE)
            parts.append(legend)
        for i, ex in enumerate(p.examples, 1):
            parts.append(Text(f"── example {i} ──", style="bold"))
            parts.append(ex)
        self.query_one("#examples", Readable).update(Group(*parts))

    def problems(self) -> list[str]:
        out = super().problems()
        if out:
            return out
        if self._pending:
            return ["still reading the data… press Next again in a moment"]
        if self._preview is None:
            return ["choose a data file"]
        if not self._preview.usable:
            return [self._preview.problem or "the data is not usable"]
        return []
