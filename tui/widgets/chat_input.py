"""The chat's prompt box: multi-line, Enter sends, ctrl+j adds a line.

Enter (carriage return) and ctrl+j (line feed) are distinct bytes on every terminal, over SSH
and inside terminal multiplexers, unlike shift+enter which most terminals cannot tell from Enter. Pasted text
keeps its newlines (bracketed paste arrives as one event, not as key presses).
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class PromptInput(TextArea):
    BINDINGS = [
        Binding("enter", "submit", "Send", show=True, priority=False),
        Binding("ctrl+s", "submit", "Send", show=False),
        Binding("ctrl+j", "newline", "New line", show=True),
    ]

    class Submitted(Message):
        def __init__(self, prompt: "PromptInput", text: str) -> None:
            super().__init__()
            self.prompt = prompt
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        # Handled here, in order with the keys around them (a binding would run after the next
        # key already typed); the bindings above put them in the footer.
        if event.key in ("enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.action_submit() if event.key == "enter" else self.action_newline()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        if not self.read_only:  # like a typed key: replaces a selection, the cursor ends after it
            self.replace("\n", *self.selection, maintain_selection_offset=False)
