"""Checkpoints that are either complete or absent.

The HF Trainer writes `checkpoint-N/` file by file, so a kill -9 or a full disk mid-save leaves a
half folder that `resume_from_checkpoint` would happily pick. Here every checkpoint is written
into a hidden staging folder, fsynced, then renamed into place in one step; older checkpoints are
only rotated away after the new one is complete. Anything named `checkpoint-N` is therefore whole.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PREFIX = "checkpoint"
STAGING = ".partial-"  # staging folders: .partial-checkpoint-N/checkpoint-N
_RE = re.compile(r"^checkpoint-(\d+)$")
COMPLETE_MARKER = "trainer_state.json"  # written last by the trainer


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk (so a rename publishes durable data)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def step_of(path: str | Path) -> int | None:
    m = _RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in folder, oldest first (staging leftovers are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and step_of(p) is not None and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: step_of(p))


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def clean_staging(folder: str | Path) -> None:
    """Remove half-written staging folders left by a killed save."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if not p.name.startswith(STAGING):
                continue
            original = folder / p.name.removeprefix(STAGING + "old-")
            if p.name.startswith(STAGING + "old-") and not original.exists():
                os.replace(p, original)  # killed between the two renames of `publish`: put it back
            else:
                shutil.rmtree(p, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """fsync staged, then rename it to final in one step (replacing an older copy of the same step)."""
    fsync_tree(staged)
    if final.exists():  # the same step saved twice (e.g. a 'checkpoint now' on a save step)
        old = final.with_name(STAGING + "old-" + final.name)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    _fsync_path(final.parent)


def save_atomically(trainer, save, trial=None) -> None:
    """Run `save()` (the Trainer's own checkpoint writer) into a staging folder, publish the
    finished checkpoint with one rename, and only then rotate older checkpoints away."""
    from transformers.trainer_utils import rotate_checkpoints

    run_dir = Path(trainer._get_output_dir(trial=trial))
    name = f"{PREFIX}-{trainer.state.global_step}"
    staging = run_dir / (STAGING + name)
    main = trainer.is_world_process_zero()  # several ranks: rank 0 stages and publishes, each writes its RNG state
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    trainer.accelerator.wait_for_everyone()
    args = trainer.args
    real_output, real_limit = args.output_dir, args.save_total_limit
    # The trainer writes <output_dir>/checkpoint-N and rotates inside output_dir: point it at the
    # staging folder, and rotate the real folder only after the rename.
    args.output_dir, args.save_total_limit = str(staging), None
    try:
        save()
        trainer.accelerator.wait_for_everyone()
        if main:
            publish(staging / name, run_dir / name)
    except BaseException:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        args.output_dir, args.save_total_limit = real_output, real_limit
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    state = trainer.state
    if state.best_model_checkpoint and str(staging) in state.best_model_checkpoint:
        state.best_model_checkpoint = state.best_model_checkpoint.replace(str(staging), str(run_dir))
    if args.should_save:
        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=real_limit,
                           best_model_checkpoint=state.best_model_checkpoint, use_mtime=False)
