"""What a run does around the training loop, as transformers TrainerCallbacks any stage's
Trainer can take: the run's records, stop/checkpoint requests, the NaN/inf stop, a final
evaluation and the loss plot. The signal handlers (a context manager around the whole run, since
outside the loop a signal must stop at once) live in lifecycle.py and share RunState with these.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from transformers import TrainerCallback

from . import checkpoints, control, rundir
from .lifecycle import RunState, draw_loss_plot
from .progress import plain_line
from .stage_figures import extra_logs
from .throughput import TrainClock, mfu

log = logging.getLogger("tuneforge")


def memory_mb() -> dict[str, float]:
    """Memory in use by this process: resident RAM and, on CUDA, allocated GPU memory."""
    out: dict[str, float] = {}
    try:
        import psutil

        out["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:  # noqa: BLE001 - memory is informative only
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["gpu_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    except Exception:  # noqa: BLE001
        pass
    return out


class RunRecorder(TrainerCallback):
    """metrics.jsonl lines (with the stage's own figures, under the names TRL logs them), status.json
    updates and progress output from the Trainer's events, and the run's speed (throughput.py: train_s, tokens_per_s, mfu). Put it first among the callbacks:
    its step clock stops before the others' end-of-step work."""

    def __init__(self, run: rundir.RunDir, progress, started: float, flops_per_token: float = 0.0,
                 matmul_rate: float | None = None):
        self.run, self.progress, self.started = run, progress, started
        self.per_token, self.rate = flops_per_token, matmul_rate
        self.clock, self.first_step, self.last_eval_loss, self.tokens_seen = TrainClock(), 0, None, 0

    def on_train_begin(self, args, state, control_, **kw):
        self.first_step = state.global_step  # > 0 when resumed: ETA counts this process's steps only
        self.clock.start(int(state.num_input_tokens_seen or 0))
        self.run.update_status(total_steps=state.max_steps)
        self.progress.start(f"tuneforge · {self.run.name}", state.max_steps)

    def on_step_begin(self, args, state, control_, **kw):
        self.clock.step_begin()

    def on_step_end(self, args, state, control_, **kw):
        if args.device.type == "cuda":  # the step's kernels are queued, not done: wait for them
            import torch

            torch.cuda.synchronize(args.device)
        self.clock.step_end()

    def speed(self) -> dict[str, Any]:
        """train_s, tokens_per_s and mfu so far (the definitions: throughput.py)."""
        tps = self.clock.tokens_per_s(self.tokens_seen)
        return {"train_s": round(self.clock.seconds, 3), "tokens_per_s": tps,
                "mfu": mfu(tps, self.per_token, self.rate)}

    def on_log(self, args, state, control_, logs=None, **kw):
        logs = logs or {}
        if "train_loss" in logs:  # the trainer's end-of-training summary
            return
        self.tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        elapsed = time.time() - self.started
        step, total = state.global_step, state.max_steps
        training = "loss" in logs
        rec: dict[str, Any] = {
            "step": step, "total_steps": total, "epoch": round(state.epoch or 0.0, 4),
            "loss": logs.get("loss"), "eval_loss": logs.get("eval_loss"),
            "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": self.clock.tokens_per_s(self.tokens_seen) if training else None,
            "train_s": round(self.clock.seconds, 3),
            "elapsed_s": round(elapsed, 2),
            "eta_s": round(elapsed / (step - self.first_step) * (total - step), 1) if step > self.first_step else None,
            **memory_mb(),
        }
        # the stage's own figures under TRL's names (rewards/margins, kl, accuracy, eval_... ): stage_figures.py
        rec.update({k: v for k, v in extra_logs(logs).items() if k not in rec})
        if logs.get("eval_loss") is not None:
            self.last_eval_loss = logs["eval_loss"]
        self.run.append_metrics(rec)
        log.info(plain_line(rec))
        self.run.update_status(step=step, total_steps=total)
        self.progress.update(rec)

    def on_save(self, args, state, control_, **kw):
        latest = checkpoints.latest_checkpoint(self.run.checkpoints)
        if latest is not None:
            self.run.update_status(last_checkpoint=str(latest), last_checkpoint_step=checkpoints.step_of(latest))


class ControlRequests(TrainerCallback):
    """After each step: act on `tuneforge stop`/`checkpoint` request files and on a stop signal
    caught by lifecycle.signals (checkpoint, then stop)."""

    def __init__(self, run: rundir.RunDir, state: RunState):
        self.run, self.state = run, state

    def on_train_begin(self, args, state, control_, **kw):
        self.state.in_loop = True

    def on_train_end(self, args, state, control_, **kw):
        self.state.in_loop = False

    def on_step_end(self, args, state, control_, **kw):
        s = self.state
        if control.take(self.run, control.STOP):
            s.stop_requested = True
            if s.stop_signal is None:
                s.stop_signal = 0
                log.warning("stop requested: saving a checkpoint after step %d, then stopping", state.global_step)
        if s.stop_signal is not None:
            control_.should_save = True
            control_.should_training_stop = True
        if control.take(self.run, control.CHECKPOINT):
            log.info("checkpoint requested: saving at step %d", state.global_step)
            control_.should_save = True


def _finite(value: Any) -> bool:
    return not isinstance(value, (int, float)) or math.isfinite(value)


def _weights_finite(model) -> bool:
    import torch

    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)


class NonFiniteStop(TrainerCallback):
    """Stop on a NaN/inf loss or grad norm, and never checkpoint non-finite weights. Put it after
    ControlRequests: it checks the weights whenever a save is due."""

    def __init__(self, state: RunState):
        self.state = state

    def on_step_end(self, args, state, control_, model=None, **kw):
        self._check_weights(state, control_, model)

    def on_epoch_end(self, args, state, control_, model=None, **kw):
        self._check_weights(state, control_, model)

    def _check_weights(self, state, control_, model) -> None:
        if control_.should_save and model is not None and not self.state.nonfinite and not _weights_finite(model):
            self._stop(state, control_, f"the weights became NaN/inf at step {state.global_step}")

    def on_log(self, args, state, control_, logs=None, **kw):
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if not _finite(value) and not self.state.nonfinite:
                self._stop(state, control_, f"{key} became {value} at step {state.global_step}")

    def _stop(self, state, control_, what: str) -> None:
        self.state.nonfinite = what
        control_.should_save = False
        control_.should_training_stop = True
        log.error("%s: stopping without saving these weights", what)


class EvaluateLastStep(TrainerCallback):
    """With eval every N steps, evaluate the last step too: the run's final eval loss is then the
    last one logged (an epoch schedule already evaluates at the end)."""

    def on_step_end(self, args, state, control_, **kw):
        if args.eval_strategy == "steps" and state.global_step >= state.max_steps:
            control_.should_evaluate = True


class LossPlot(TrainerCallback):
    """Draw loss.png when training ends (before the run is marked finished)."""

    def __init__(self, run: rundir.RunDir):
        self.run = run

    def on_train_end(self, args, state, control_, **kw):
        draw_loss_plot(self.run)


class FollowCpuLoad(TrainerCallback):
    """Between steps, lower torch's thread count while other processes use this run's CPUs and raise
    it again when they stop (threads.LoadFollower): spinning OpenMP threads that wait for a CPU another
    process holds made training 4-10x slower beside one busy process."""

    def __init__(self, follower, say=None):
        self.follower, self.say = follower, say or log.info

    def on_step_end(self, args, state, control_, **kw):
        import torch

        want = self.follower.check()
        if want is not None and want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.say(f"threads: {want} intra-op (other processes use {self.follower.others:.1f} of "
                     f"{self.follower.budget} CPUs)")
