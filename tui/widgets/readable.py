"""A block of text the keyboard can reach: Tab focuses it (scrolling it into view) and
PageDown/↓ then scroll the step on, so nothing sits below the fold at 80x24."""

from __future__ import annotations

from textual.widgets import Static


class Readable(Static, can_focus=True):
    DEFAULT_CSS = "Readable:focus { background: $boost; }"
