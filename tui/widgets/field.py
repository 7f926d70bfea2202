"""One recipe field: title, input, the schema's help text and the schema's validation message."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

from ..draft import FieldSpec, field_spec, parse_text, show_value


class FieldInput(Input):
    """An Input that runs its own editing keys (ctrl+u, end, backspace, ...) the moment they
    arrive. Textual runs a widget's key bindings only after the key has bubbled up to the app, so
    printable keys queued behind it (a paste, keys a terminal multiplexer sends at once, a slow SSH link) were
    inserted first and then wiped out by the late ctrl+u."""

    async def _on_key(self, event) -> None:
        if not event.is_printable:
            bindings = self._bindings.key_to_bindings.get(event.key, [])
            if bindings:
                event.stop()
                event.prevent_default()
                await self.run_action(bindings[0].action)
                return
        await super()._on_key(event)


class FieldEditor(Vertical):
    """Edits one dotted recipe path; posts `FieldEditor.Changed` with the typed value."""

    DEFAULT_CSS = """
    FieldEditor { height: auto; margin: 0 0 1 0; }
    FieldEditor > Horizontal { height: auto; }
    FieldEditor .field-title { width: 18; padding: 0 1 0 0; text-style: bold; }
    FieldEditor Input, FieldEditor Select { width: 1fr; }
    FieldEditor Switch { width: auto; }
    FieldEditor .field-help { color: $text-muted; padding: 0 0 0 18; }
    FieldEditor .field-error { color: $text-error; padding: 0 0 0 18; display: none; }
    FieldEditor.-invalid .field-error { display: block; }
    """

    class Changed(Message):
        def __init__(self, editor: "FieldEditor", path: str, value: Any) -> None:
            super().__init__()
            self.editor, self.path, self.value = editor, path, value

        @property
        def control(self) -> "FieldEditor":
            return self.editor

    def __init__(self, path: str, value: Any, *, title: str | None = None, help: bool = True) -> None:
        super().__init__(id="f-" + path.replace(".", "-"))
        self.path = path
        self.spec: FieldSpec = field_spec(path)
        self.title = title or self.spec.title
        self._value = value
        self._help = help

    def compose(self) -> ComposeResult:
        spec = self.spec
        with Horizontal():
            yield Label(self.title, classes="field-title")
            if spec.is_bool:
                yield Switch(value=bool(self._value if self._value is not None else spec.default))
            elif spec.choices:
                current = self._value if self._value in spec.choices else spec.default
                yield Select([(str(c), c) for c in spec.choices], value=current, allow_blank=False, compact=True)
            else:
                default = show_value(spec.default)
                yield FieldInput(show_value(self._value), placeholder=f"default: {default}" if default else "",
                                 compact=True)
        if self._help and spec.description:
            yield Static(spec.description, classes="field-help")
        yield Static("", classes="field-error")

    # -- value in/out ----------------------------------------------------------------------
    def set_value(self, value: Any) -> None:
        """Show a value chosen elsewhere (e.g. a suggestion) without posting Changed twice."""
        self._value = value
        if self.spec.is_bool:
            self.query_one(Switch).value = bool(value)
        elif self.spec.choices:
            if value in self.spec.choices:
                self.query_one(Select).value = value
        else:
            inp = self.query_one(Input)
            with inp.prevent(Input.Changed):
                inp.value = show_value(value)

    def current_value(self) -> Any:
        """The value the widget shows right now (key presses may be ahead of Changed messages)."""
        if self.spec.is_bool:
            return self.query_one(Switch).value
        if self.spec.choices:
            return self.query_one(Select).value
        return parse_text(self.query_one(Input).value, self.spec)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Static).update(f"✗ {message}" if message else "")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._emit(parse_text(event.value, self.spec))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        go_next = getattr(self.screen, "action_next", None)  # Enter in a field = Next
        if go_next is not None:
            go_next()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._emit(event.value)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self._emit(event.value)

    def _emit(self, value: Any) -> None:
        self._value = value
        self.post_message(self.Changed(self, self.path, value))
