"""Packing is contamination-free: a packed batch gives the same logits and loss as running each
example alone, and a packed run trains end to end."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False  # as in training: with a cache, transformers ignores the packed positions
    return model.eval()


def _examples():
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(10, 4000, (n,), generator=g).tolist() for n in (7, 12, 5)]


@pytest.mark.parametrize("attn", ["sdpa", "eager", "cpu-eager-branch", "cpu-sdpa-branch"])
def test_packed_logits_equal_one_by_one(tiny, attn, monkeypatch):
    """cpu-*: CPU training's length-dispatched attention (speed.cpu_attention), each branch forced."""
    import torch
    from transformers import DataCollatorWithFlattening

    from tuneforge.runner import speed

    if attn.startswith("cpu-"):
        monkeypatch.setattr(speed, "EAGER_CPU_MAX_QUERY", 10_000 if attn == "cpu-eager-branch" else 0)
        speed._register_cpu_attention()
        attn = speed.CPU_ATTENTION
    tiny.set_attn_implementation(attn)

    seqs = _examples()
    batch = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": s, "labels": s} for s in seqs])
    assert batch["input_ids"].shape == (1, sum(map(len, seqs))) and "attention_mask" not in batch
    with torch.no_grad():
        packed = tiny(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = torch.cat([tiny(input_ids=torch.tensor([s])).logits[0] for s in seqs])
        # the same tokens concatenated without per-example positions DO see each other: the check can fail
        leaky = tiny(input_ids=batch["input_ids"]).logits[0]
    assert torch.allclose(packed, alone, atol=1e-4)
    assert not torch.allclose(leaky[7:], alone[7:], atol=1e-2)


def test_packed_loss_equals_the_token_mean_of_the_examples(tiny):
    import torch
    from transformers import DataCollatorWithFlattening

    seqs = _examples()
    batch = DataCollatorWithFlattening(return_position_ids=True)([{"input_ids": s, "labels": s} for s in seqs])
    with torch.no_grad():
        packed = tiny(**batch).loss
        sums = [tiny(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss * (len(s) - 1) for s in seqs]
    # no example's first token is predicted from the one before it
    assert torch.allclose(packed, sum(sums) / sum(len(s) - 1 for s in seqs), atol=1e-5)


def test_a_packed_run_trains(tiny_model_dir, tmp_path):
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"name {i}", "output": "x " * (i + 1)}) + "\n" for i in range(8)))
    rec = recipe_from_dict({
        "name": "p", "model": {"name_or_path": str(tiny_model_dir)}, "speed": {"packing": True},
        "data": {"train": [{"path": str(data)}], "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1}, "output": {"runs_dir": str(tmp_path)},
    })
    res = train(rec, progress_mode="plain")
    assert json.loads(res.run.status.read_text())["state"] == "finished"
    assert "packing on" in res.run.log.read_text()
