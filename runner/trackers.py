"""Experiment trackers through the HF Trainer's own integrations (`report_to`, or their callbacks).

tuneforge only decides where things land: TensorBoard event files in runs/<name>/tensorboard,
wandb files in the run directory (offline when there is no login or no network, so a run on an
air-gapped server never hangs or dies on it), MLflow in runs/<name>/mlruns unless a tracking URI is set.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from . import rundir
from .errors import TuneforgeError

log = logging.getLogger("tuneforge")

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
WANDB_HOST = ("api.wandb.ai", 443)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8")
    except OSError:
        return False


def _reachable(host_port: tuple[str, int], timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host_port, timeout=timeout):
            return True
    except OSError:
        return False


def check_installed(names: list[str]) -> None:
    """Fail before any model loading when a listed tracker's package is missing or does not import
    (a half-installed one, e.g. a dependency missing, would otherwise fail inside the Trainer)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(PACKAGES[name])
        except ImportError as exc:
            raise TuneforgeError(
                f"report_to lists '{name}' but the '{PACKAGES[name]}' package is not installed or does not import ({exc})",
                f"pip install {PACKAGES[name]}   (or remove '{name}' from report_to)",
            ) from exc


def setup_trackers(names: list[str], run: rundir.RunDir, say) -> list[str]:
    """Check the packages are there and set each tracker's location; returns the Trainer's
    report_to list (TensorBoard comes as a callback instead: callbacks())."""
    check_installed(names)
    if "wandb" in names:
        os.environ.setdefault("WANDB_DIR", str(run.path))
        os.environ.setdefault("WANDB_PROJECT", "tuneforge")
        if os.environ.get("WANDB_MODE") not in {"offline", "disabled"}:
            why = None
            if not _wandb_logged_in():
                why = "not logged in (no WANDB_API_KEY or ~/.netrc entry)"
            elif not _reachable(WANDB_HOST):
                why = f"{WANDB_HOST[0]} is not reachable"
            if why:
                os.environ["WANDB_MODE"] = "offline"
                say(f"wandb: {why}, so logging offline into {run.path}/wandb; "
                    f"upload later with: wandb sync {run.path}/wandb/offline-run-*")
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = (run.path / "mlruns").resolve().as_uri()
        # mlflow >= 3.x refuses its folder store unless opted in (a database needs sqlalchemy, which
        # mlflow-skinny lacks); a folder inside the run directory is what this default promises.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "tuneforge")
        say(f"mlflow: logging into {run.path / 'mlruns'} (set MLFLOW_TRACKING_URI to use a server)")
    if "tensorboard" in names:
        say(f"tensorboard: event files in {run.path / 'tensorboard'}; view with: tensorboard --logdir {run.path / 'tensorboard'}")
    return [n for n in names if n != "tensorboard"]


def callbacks(names: list[str], run: rundir.RunDir) -> list:
    """Tracker callbacks tuneforge configures itself: TensorBoard writing into
    runs/<name>/tensorboard (the Trainer's own would write under checkpoints/runs)."""
    if "tensorboard" not in names:
        return []
    from transformers.integrations import TensorBoardCallback

    board = TensorBoardCallback()
    board.logging_dir = str(run.path / "tensorboard")
    return [board]
