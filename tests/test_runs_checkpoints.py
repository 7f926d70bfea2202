"""Atomic checkpoint publishing on real folders (fast, no training): what a reader or a resume
sees after a save that was killed at each point."""

from __future__ import annotations

from pathlib import Path

from tuneforge.runner import checkpoints as ck


def _checkpoint(folder: Path, step: int, payload: str = "w") -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_text(payload)
    (path / "trainer_state.json").write_text("{}")
    return path


def test_only_complete_checkpoints_count(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10)
    (tmp_path / "checkpoint-12").mkdir()  # a half folder from a non-atomic writer: no trainer_state.json
    _checkpoint(tmp_path / ".partial-checkpoint-14", 14)  # killed mid-save in staging
    assert [p.name for p in ck.complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    ck.clean_staging(tmp_path)
    assert not (tmp_path / ".partial-checkpoint-14").exists()


def test_publish_replaces_the_same_step_whole(tmp_path):
    _checkpoint(tmp_path, 4, "old")
    staged = _checkpoint(tmp_path / ".partial-checkpoint-4", 4, "new")
    ck.publish(staged, tmp_path / "checkpoint-4")
    assert (tmp_path / "checkpoint-4" / "adapter_model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial-checkpoint-4", "checkpoint-4"]


def test_killed_between_the_two_renames_restores_the_old_copy(tmp_path):
    # publish() moved checkpoint-4 aside and died before moving the new one in
    old = _checkpoint(tmp_path, 4, "old")
    old.rename(tmp_path / ".partial-old-checkpoint-4")
    _checkpoint(tmp_path / ".partial-checkpoint-4", 4, "new")
    assert ck.latest_checkpoint(tmp_path) is None
    ck.clean_staging(tmp_path)
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert (tmp_path / "checkpoint-4" / "adapter_model.safetensors").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-4"]
