"""The loss curve as a PNG: train loss (raw and smoothed) and eval loss, from metrics.jsonl.

Uses matplotlib's Agg backend (no display needed on a server). Written at the end of every run
and by `tuneforge plot RUN` at any time, also while the run is going.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import rundir
from .errors import TuneforgeError


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_run(run: rundir.RunDir, out: Path | None = None) -> Path:
    """Draw runs/<name>/loss.png (atomically). Raises TuneforgeError when there is nothing to draw."""
    records = run.read_metrics()
    train = [(r["step"], r["loss"]) for r in records if _finite(r.get("loss"))]
    evals = sorted({r["step"]: r["eval_loss"] for r in records if _finite(r.get("eval_loss"))}.items())
    from .eval.results import read_during  # the recipe's eval: block, scored every N steps

    scored = sorted({p["step"]: p["loss"] for p in read_during(run.path) if _finite(p.get("loss"))}.items())
    if not train and not evals and not scored:
        raise TuneforgeError(f"run '{run.name}' has no losses in {run.metrics} yet",
                             "wait for the first log step (train.logging_steps) and try again")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    try:
        if train:
            steps, losses = zip(*train)
            ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train (raw)")
            ax.plot(steps, smooth(list(losses)), color="tab:blue", linewidth=2, label="train (smoothed)")
        if evals:
            steps, losses = zip(*evals)
            # eval loss is already an average over the eval set: smooth it only when there are many points
            smoothed = len(evals) >= 10
            ax.plot(steps, losses, color="tab:orange", alpha=0.35 if smoothed else 0.9, linewidth=1 if smoothed else 2,
                    marker="o", markersize=3, label="eval (raw)")
            if smoothed:
                ax.plot(steps, smooth(list(losses), 0.6), color="tab:orange", linewidth=2, label="eval (smoothed)")
        if scored:
            steps, losses = zip(*scored)
            ax.plot(steps, losses, color="tab:green", linewidth=1.5, linestyle="--", marker="s", markersize=4,
                    label="eval block (tuneforge eval)")
        last = records[-1] if records else {}
        ax.set_title(f"{run.name} · step {last.get('step', '?')}/{last.get('total_steps', '?')}", fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        target = out or run.path / "loss.png"
        tmp = target.with_name(target.name + ".tmp.png")
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    finally:
        plt.close(fig)
    return target
