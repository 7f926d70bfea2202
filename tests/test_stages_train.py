"""Every preference and pre-training stage end to end on the tiny Llama with SmolLM2's real
tokenizer and TRL's real trainers: a complete run directory, the saved recipe validates and
replays to the same losses, and the weights load back the way chat, export and score need."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import shared

def stage_recipe(tmp_path, model_dir, stage: str, **over) -> dict:
    data = ("c4_demo.jsonl", 16) if stage == "pt" else ("dpo_en_demo.json", 24)
    rec = {
        "name": stage, "stage": stage,
        "model": {"name_or_path": str(model_dir)},
        "method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": [{"path": str(shared(data[0])), "max_samples": data[1]}], "max_length": 192,
                 "truncation": "keep_end", "on_bad_rows": "skip", "eval_split": 0.2},
        "train": {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                  "warmup_ratio": 0.0, "scheduler": "constant", "save_steps": 2},
        "output": {"runs_dir": str(tmp_path / "runs"), "overwrite": True},
    }
    if stage == "kto":
        rec["kto"] = {"unpair": True}
    rec.update(over)
    return rec


def write(tmp_path, rec: dict):
    path = tmp_path / f"{rec['name']}.yaml"
    path.write_text(yaml.safe_dump(rec))
    return path


def run_recipe(path):
    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    return train(load_recipe(path), progress_mode="plain")


@pytest.mark.parametrize("stage", ["dpo", "kto", "orpo", "simpo", "rm", "pt"])
def test_stage_trains_writes_a_complete_run_and_replays(tiny_model_dir, tmp_path, stage):
    from tuneforge.runner import model as model_mod

    first = run_recipe(write(tmp_path, stage_recipe(tmp_path, tiny_model_dir, stage)))
    run = first.run.path
    for name in ("recipe.yaml", "metrics.jsonl", "status.json", "train.log", "data_report.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    weights = run / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (weights / name).is_file(), name
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 3
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["stage"] == stage
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("loss")]
    assert len(losses) == 3 and all(x == x for x in losses)

    adapter_cfg = json.loads((weights / "adapter_config.json").read_text())
    assert adapter_cfg["task_type"] == ("SEQ_CLS" if stage == "rm" else "CAUSAL_LM")
    merged = model_mod.merge_adapter(model_mod.resolve(str(tiny_model_dir)), weights)
    assert type(merged).__name__ == ("LlamaForSequenceClassification" if stage == "rm" else "LlamaForCausalLM")

    # the saved recipe validates and replays to the same losses
    replay = run_recipe(run / "recipe.yaml")
    again = [r["loss"] for r in map(json.loads, (replay.run.path / "metrics.jsonl").read_text().splitlines()) if r.get("loss")]
    assert again == pytest.approx(losses, rel=1e-5, abs=1e-6)


def test_precomputed_reference_equals_the_live_reference_and_is_cached(tiny_model_dir, tmp_path):
    """dpo.reference.kind precomputed: the same losses as the live base reference (adapter off),
    the log-probs computed once and found in the cache by a replay."""
    fp32 = {"precision": "fp32", "train": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                                           "warmup_ratio": 0.0, "scheduler": "constant", "save_steps": 100}}

    def losses_of(result):
        rows = map(json.loads, (result.run.path / "metrics.jsonl").read_text().splitlines())
        return [r["loss"] for r in rows if r.get("loss")]

    live = run_recipe(write(tmp_path, stage_recipe(tmp_path, tiny_model_dir, "dpo", name="live", **fp32)))
    pre = stage_recipe(tmp_path, tiny_model_dir, "dpo", name="pre", dpo={"reference": {"kind": "precomputed"}}, **fp32)
    first = run_recipe(write(tmp_path, pre))
    assert losses_of(first) == pytest.approx(losses_of(live), rel=1e-4, abs=1e-5)
    assert "computed once, cached" in (first.run.path / "train.log").read_text()
    again = run_recipe(first.run.path / "recipe.yaml")
    assert "from the cache" in (again.run.path / "train.log").read_text()
    assert losses_of(again) == losses_of(first)
