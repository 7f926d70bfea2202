"""Side panel with the system prompt and sampling settings of the chat (F2 shows/hides it).

Edits apply to the next reply. An entry that is out of range turns red and is not applied;
`/set` and `/system` in the prompt box change the same values and refresh the panel.
"""

from __future__ import annotations

from dataclasses import fields

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, TextArea

from tuneforge.runner.chat import Sampling
from tuneforge.runner.errors import TuneforgeError


class SettingsPanel(VerticalScroll):
    DEFAULT_CSS = """
    SettingsPanel { width: 36; border-left: solid $primary; padding: 0 1; display: none; }
    SettingsPanel.-visible { display: block; }
    SettingsPanel Label { margin: 1 0 0 0; color: $text-muted; }
    SettingsPanel #system { height: 6; }
    SettingsPanel Input.-invalid { border: tall $error; }
    """

    class Changed(Message):
        """A value was applied (the screen shows nothing; it reads the shared objects)."""

    def __init__(self, sampling: Sampling, system: str | None) -> None:
        super().__init__()
        self.sampling = sampling
        self.system = system or ""
        self._syncing = False

    def compose(self) -> ComposeResult:
        yield Label("System prompt")
        yield TextArea(self.system, id="system", soft_wrap=True, tab_behavior="focus")
        for f in fields(Sampling):
            yield Label(f.name.replace("_", " "))
            yield Input(str(getattr(self.sampling, f.name)), id=f"set-{f.name}", tooltip=Sampling.HELP[f.name])

    def refresh_values(self, system: str | None) -> None:
        """Show values changed elsewhere (/set, /system)."""
        self._syncing = True
        try:
            self.system = system or ""
            area = self.query_one("#system", TextArea)
            if area.text != self.system:
                area.text = self.system
            for f in fields(Sampling):
                box = self.query_one(f"#set-{f.name}", Input)
                box.value = str(getattr(self.sampling, f.name))
                box.remove_class("-invalid")
        finally:
            self._syncing = False

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._syncing or not (event.input.id or "").startswith("set-"):
            return
        try:
            self.sampling.set(event.input.id[4:], event.value.strip())
        except TuneforgeError as exc:
            event.input.remove_class("-invalid")
            event.input.add_class("-invalid")
            event.input.tooltip = f"{exc.message}\n{exc.fix or ''}"
            return
        event.input.remove_class("-invalid")
        self.post_message(self.Changed())

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        if self._syncing or event.text_area.id != "system":
            return
        self.system = event.text_area.text
        self.post_message(self.Changed())
