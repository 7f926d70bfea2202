"""One exchange in the chat transcript: the user's prompt and the model's streamed reply.

A reply is rendered as Markdown while it streams. A `<think>...</think>` block (reasoning
models) is split off into a dimmed, collapsible section above the answer.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_think(text: str) -> tuple[str | None, str, bool]:
    """(thinking, answer, still_thinking) for a reply that may hold one <think> block.

    A reply that only closes a block ('...</think>answer') is thinking from its start: some
    templates open the block in the prompt.
    """
    start, end = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if start == -1 and end == -1:
        return None, text, False
    if start != -1 and (end == -1 or start < end):
        before, rest = text[:start], text[start + len(THINK_OPEN):]
        end = rest.find(THINK_CLOSE)
        if end == -1:
            return rest.strip(), before, True
        return rest[:end].strip(), (before + rest[end + len(THINK_CLOSE):]).strip(), False
    return text[:end].strip(), text[end + len(THINK_CLOSE):].strip(), False


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage { background: $boost; border-left: thick $accent; padding: 0 1; margin: 1 0 0 0; }
    """

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False)
        self.text = text


class ReplyView(Vertical):
    """A reply that grows as pieces arrive; redraws at most ~12 times a second."""

    DEFAULT_CSS = """
    ReplyView { height: auto; padding: 0 1; margin: 0 0 1 0; }
    ReplyView .reply-title { color: $text-muted; text-style: bold; }
    ReplyView Collapsible { display: none; border: none; padding: 0; margin: 0; background: transparent; }
    ReplyView.-has-think Collapsible { display: block; }
    ReplyView .think { color: $text-muted; text-style: italic; }
    ReplyView Markdown { margin: 0; padding: 0; }
    ReplyView .reply-status { color: $text-muted; }
    """

    def __init__(self, title: str, variant: str) -> None:
        super().__init__()
        self.title, self.variant = title, variant
        self.text = ""
        self.done = False
        self._dirty = False
        self._shown_answer = ""
        self._timer = None

    def compose(self) -> ComposeResult:
        yield Static(self.title, classes="reply-title", markup=False)
        with Collapsible(title="thinking", collapsed=False):
            yield Static("", classes="think", markup=False)
        yield Markdown("")
        yield Static("…", classes="reply-status", markup=False)

    def on_mount(self) -> None:
        self._timer = self.set_interval(1 / 12, self._flush)

    @property
    def answer(self) -> str:
        """The reply text without its thinking block (what the Markdown shows)."""
        return split_think(self.text)[1]

    @property
    def markdown_source(self) -> str:
        return self.query_one(Markdown).source

    def append(self, piece: str) -> None:
        self.text += piece
        self._dirty = True

    def set_status(self, text: str) -> None:
        self.query_one(".reply-status", Static).update(text)

    def finish(self, status: str) -> None:
        self.done = True
        self._dirty = True
        self._flush()
        if self._timer is not None:
            self._timer.stop()  # a finished reply no longer redraws
        self.set_status(status)

    def collapse_think(self, collapsed: bool) -> None:
        self.query_one(Collapsible).collapsed = collapsed

    def _flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        think, answer, thinking = split_think(self.text)
        if think is not None:
            self.add_class("-has-think")
            self.query_one(".think", Static).update(think)
            self.query_one(Collapsible).title = "thinking…" if thinking else "thinking (ctrl+t folds)"
        md = self.query_one(Markdown)
        if answer.startswith(self._shown_answer) and self._shown_answer:
            md.append(answer[len(self._shown_answer):])
        else:
            md.update(answer)
        self._shown_answer = answer
        if not self.done:
            self.set_status("thinking…" if thinking else "writing…")
