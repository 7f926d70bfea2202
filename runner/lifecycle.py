"""What keeps a long headless run safe outside the Trainer's callbacks: signal handlers around the
whole run, resume preparation, and turning how the loop ended into the run's outcome. The in-loop
behaviour (stop/checkpoint requests, the NaN stop, records, plot) is in callbacks.py; the two
share a RunState.

- SIGINT/SIGTERM in the training loop: finish the step, save a checkpoint, stop; the run is marked
  'stopped' and the process exits 130/143. A second signal stops at once. Outside the loop
  (loading, final save) the signal stops at once.
- SIGHUP (the terminal went away): logged and ignored; the live display is switched off because
  the terminal it drew on is gone, while train.log and metrics.jsonl go on.
- A non-finite loss or grad norm, or non-finite weights about to be checkpointed: the run stops,
  nothing non-finite is saved, and the last checkpoint (finite by construction) is named.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from . import checkpoints, control, rundir
from .errors import TuneforgeError

log = logging.getLogger("tuneforge")

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunStopped(KeyboardInterrupt):
    """The run was stopped on request; `exit_code` is 130 (SIGINT) or 143 (SIGTERM/stop)."""

    def __init__(self, reason: str, exit_code: int, checkpoint: Path | None = None):
        super().__init__(reason)
        self.reason, self.exit_code, self.checkpoint = reason, exit_code, checkpoint


class NonFiniteLoss(TuneforgeError):
    """Training produced NaN/inf. A runtime failure (exit 1), but with a fix to print."""

    exit_code = 1


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class SafeProgress:
    """Wraps a progress display so a vanished terminal (SIGHUP, EIO) never kills the run."""

    def __init__(self, inner):
        self.inner, self.enabled = inner, True

    def disable(self) -> None:
        if self.enabled:
            self.enabled = False
            with contextlib.suppress(Exception):
                self.inner.stop()

    def __getattr__(self, name):
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*a, **kw):
            if not self.enabled:
                return None
            try:
                return target(*a, **kw)
            except (OSError, ValueError):  # EIO / closed file: the terminal is gone
                self.enabled = False
                return None

        return call


class RunState:
    """What the signal handlers, the callbacks and the runner tell each other."""

    def __init__(self):
        self.in_loop = False  # inside trainer.train(): a stop signal waits for the end of the step
        self.stop_signal: int | None = None  # signal number, or 0 for a file request
        self.stop_requested = False  # a `tuneforge stop` file was seen (with or without its SIGTERM)
        self.nonfinite: str | None = None  # what became NaN/inf, when training stopped on it


class Lifecycle:
    def __init__(self, run: rundir.RunDir, recipe, progress, say, resume_from: Path | None = None):
        self.run, self.recipe, self.progress, self.say = run, recipe, progress, say
        self.resume_from = resume_from
        self.state = RunState()
        # Which of stdout/stderr are terminals, asked now: once hung up, isatty() says no.
        self.tty_fds = [fd for fd in (1, 2) if _isatty(fd)]

    # --- signals --------------------------------------------------------------------------
    @contextlib.contextmanager
    def signals(self):
        """Install SIGINT/SIGTERM/SIGHUP handlers for the duration of the run (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _on_stop_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.state.in_loop and self.state.stop_signal is None:
            self.state.stop_signal = signum
            log.warning("received %s: saving a checkpoint after this step, then stopping "
                        "(send it again to stop at once, without a checkpoint)", name)
            self.progress.message(f"{name}: checkpoint after this step, then stop (again: stop at once)")
            return
        raise RunStopped(f"stopped by {name}", SIGNAL_EXIT.get(signum, 128 + signum))

    def _on_hup(self, signum, frame) -> None:
        log.warning("received SIGHUP (the terminal closed): ignored, training goes on; "
                    "follow it with: tuneforge watch %s", self.run.path)
        disable = getattr(self.progress, "disable", None)
        if disable:
            disable()
        # Anything else written to the dead terminal (a last message, the interpreter's flush at
        # exit) would fail with EIO and turn a finished run into exit 1: send it to /dev/null.
        # Only terminals: under nohup stdout is a file and keeps every line.
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in self.tty_fds:
                os.dup2(null, fd)
        finally:
            os.close(null)

    # --- hooks for train.py ---------------------------------------------------------------
    def prepare(self) -> None:
        """Before training: clear stale requests and half-written checkpoints; on resume, drop
        metrics logged after the checkpoint (they will be logged again)."""
        from .trackers import check_installed

        check_installed(getattr(self.recipe, "report_to", []) or [])
        control.clear(self.run)
        self.run.update_status(stop_reason=None, exit_code=None,
                               resumed_from=str(self.resume_from) if self.resume_from else None)
        checkpoints.clean_staging(self.run.checkpoints)
        if self.resume_from is not None:
            keep_upto = checkpoints.step_of(self.resume_from) or 0
            kept = [r for r in self.run.read_metrics() if (r.get("step") or 0) <= keep_upto]
            tmp = self.run.metrics.with_suffix(".jsonl.tmp")
            import json

            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.run.metrics)
            self.run.update_status(step=keep_upto)
            self.say(f"resuming from {self.resume_from} (step {keep_upto})")

    def training_args(self) -> dict[str, Any]:
        """Extra TrainingArguments: trackers, run name, and no hiding of NaN losses."""
        from .trackers import setup_trackers

        report_to = setup_trackers(getattr(self.recipe, "report_to", []) or [], self.run, self.say)
        return {"report_to": report_to or "none", "run_name": self.run.name, "logging_nan_inf_filter": False}

    def after_train(self) -> None:
        """After trainer.train() returns: raise if it returned because of a stop or a NaN."""
        latest = checkpoints.latest_checkpoint(self.run.checkpoints)
        if self.state.nonfinite:
            where = (f"the last checkpoint with finite weights is {latest} (step {checkpoints.step_of(latest)})"
                     if latest else "no checkpoint was saved before it")
            raise NonFiniteLoss(
                f"training stopped: {self.state.nonfinite}; {where}",
                f"lower train.learning_rate (now {self.recipe.train.learning_rate:g}) or check the data, then "
                "train again; the weights after that step were not saved",
            )
        if self.state.stop_signal is not None:
            s = self.state
            name = "tuneforge stop" if s.stop_requested else signal.Signals(s.stop_signal).name
            raise RunStopped(f"stopped by {name}", SIGNAL_EXIT.get(s.stop_signal, 143), latest)

    def end_fields(self, exc: BaseException) -> dict[str, Any]:
        """Extra status.json fields for a run that ended with an exception."""
        latest = checkpoints.latest_checkpoint(self.run.checkpoints)
        fields: dict[str, Any] = {"last_checkpoint": str(latest) if latest else None}
        if isinstance(exc, RunStopped):
            fields.update(stop_reason=exc.reason, exit_code=exc.exit_code)
        elif isinstance(exc, KeyboardInterrupt):
            fields.update(stop_reason="interrupted", exit_code=130)
        if latest is not None and isinstance(exc, KeyboardInterrupt):
            self.say(f"{getattr(exc, 'reason', 'stopped')}; resumable checkpoint: {latest}\n"
                     f"resume with: tuneforge resume {self.run.path}")
        return fields


def draw_loss_plot(run: rundir.RunDir) -> None:
    """loss.png from metrics.jsonl, at the end of a run however it ended; a missing plot never
    fails a run."""
    try:
        from .plot import plot_run

        plot_run(run)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not draw loss.png: %s", exc)
