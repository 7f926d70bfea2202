"""The loss curve as a PNG: train loss (raw and smoothed) and eval loss, from metrics.jsonl, and
below it a second panel with the stage's own figures (DPO's reward margin and accuracy, KTO's kl and
desirable/undesirable rewards, the reward model's accuracy: stage_figures.py) when the run has them.

Uses matplotlib's Agg backend (no display needed on a server). Written at the end of every run
and by `tuneforge plot RUN` at any time, also while the run is going.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import rundir, stage_figures
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

    figs = stage_figures.series(records, stage_figures.run_stage(run.path))
    if figs:
        fig, (ax, fax) = plt.subplots(2, 1, figsize=(8, 7.5), dpi=110, sharex=True, height_ratios=(3, 2))
    else:
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
        ax.set_xlabel("" if figs else "step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        if figs:
            _figures_panel(fax, figs)
        fig.tight_layout()
        target = out or run.path / "loss.png"
        tmp = target.with_name(target.name + ".tmp.png")
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    finally:
        plt.close(fig)
    return target


def _figures_panel(ax, figs: dict) -> None:
    """The stage's figures against the step: rewards/margins/kl on the left axis, accuracies (0-1) on
    the right; log-probs (another scale altogether) stay in metrics.jsonl. Train lines are smoothed
    (raw ones faint), eval points marked."""
    share_ax = None
    colors = iter(["tab:green", "tab:purple", "tab:red", "tab:brown", "tab:olive", "tab:cyan"])
    handles = []
    for f, pts in figs.items():
        if f.kind == "logp":
            continue
        target = ax
        if f.kind == "share":
            share_ax = share_ax or ax.twinx()
            share_ax.set_ylim(-0.02, 1.02)
            share_ax.set_ylabel("accuracy")
            target = share_ax
        color = next(colors, "tab:gray")
        if pts["train"]:
            steps, vals = zip(*pts["train"])
            target.plot(steps, vals, color=color, alpha=0.25, linewidth=1)
            handles += target.plot(steps, smooth(list(vals)), color=color, linewidth=2, label=f.label)
        if pts["eval"]:
            steps, vals = zip(*sorted(dict(pts["eval"]).items()))
            handles += target.plot(steps, vals, color=color, linestyle="--", marker="o", markersize=3,
                                   label=f"eval {f.label}")
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.4)
    ax.set_xlabel("step")
    ax.set_ylabel("reward / kl")
    ax.grid(True, alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8, ncol=2)
