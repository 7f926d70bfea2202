"""Pickers that turn a keyboard choice into a typed message: models and data files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.message import Message
from textual.widgets import DirectoryTree, OptionList, RadioButton
from textual.widgets.option_list import Option

from ..modelinfo import ModelChoice

DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet", ".txt"}


class Choice(RadioButton):
    """A radio button whose mark says it is chosen without colour: ● chosen, blank otherwise
    (Textual draws ● in every button and tells them apart by colour only)."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's class attribute, made per instance
        return "●" if self.value else " "


class ModelPicker(OptionList):
    """The models found on this machine; Enter (or highlight) posts `ModelPicker.Chosen`."""

    DEFAULT_CSS = "ModelPicker { height: auto; max-height: 7; }"

    class Chosen(Message):
        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    def __init__(self, choices: list[ModelChoice], **kw) -> None:
        super().__init__(*[Option(c.label, id=c.value) for c in choices], **kw)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(event.option.id or ""))


class DataPicker(DirectoryTree):
    """Folders and data files under a folder; choosing a file posts `Chosen`. With `kinds`, only
    files whose rows a stage can train on are listed (detected in the tree's loader thread)."""

    DEFAULT_CSS = "DataPicker { height: 8; }"

    def __init__(self, path, kinds: tuple[str, ...] | None = None, **kw) -> None:
        super().__init__(path, **kw)
        self.kinds = kinds

    class Chosen(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        from ..datakind import fits

        return [p for p in paths if not p.name.startswith(".") and p.name not in {"__pycache__", "node_modules"}
                and (p.is_dir() or (p.suffix in DATA_SUFFIXES and fits(p, self.kinds)))]

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(event.path))
