"""One error type for user mistakes: the CLI prints it and exits 2, with no traceback."""

from __future__ import annotations


class TuneforgeError(Exception):
    """A mistake the user can fix: bad recipe, bad data, bad path, bad flag.

    `message` says what is wrong (naming the field, file or row); `fix` says what to do.
    """

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class RecipeError(TuneforgeError):
    """The recipe (file or overrides) does not validate."""

    def __init__(self, errors: list[str], source: str = "recipe"):
        self.errors = errors
        body = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{source} has {len(errors)} problem(s):\n{body}")


class DataError(TuneforgeError):
    """The training data cannot be read or has bad rows."""


class ModelError(TuneforgeError):
    """The model cannot be found or loaded."""
