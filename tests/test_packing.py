"""Packing is contamination-free: a packed batch gives the same logits and loss as running each
example alone, and a packed run trains end to end.

Tolerances: packed and one-by-one (or padded) runs are the same fp32 math summed in another order,
and AVX2 and AVX-512 kernels order sums differently again: they agree to a few hundred ulps (fp32
eps 1.2e-7) of each tensor's scale, so rtol 1e-4 per element plus atol 1e-5 of the tensor's largest
value. A token that sees another example moves its logits by ~1e-2 and more (the leaky check).
"""

from __future__ import annotations

import json

import pytest

from tuneforge.runner.recipe import recipe_from_dict


def assert_close_fp32(got, want):
    import torch

    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-12)


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


@pytest.mark.parametrize("attn,boundaries", [
    ("sdpa", "positions"), ("eager", "positions"),
    ("cpu-eager-branch", "positions"), ("cpu-sdpa-branch", "positions"),
    ("cpu-eager-branch", "cu_seq_lens"), ("cpu-sdpa-branch", "cu_seq_lens"),
    ("cpu-eager-branch", "unhooked"),
])
def test_packed_logits_equal_one_by_one(tiny, attn, boundaries, monkeypatch):
    """cpu-*: CPU training's attention (cpu_attention), each length branch forced; the decoder's
    pre-hook finds the examples from the collator's cu_seq_lens (what training passes) or from where
    positions restart; 'unhooked': the attention alone finds them (a model called without the hook)."""
    import torch
    from transformers import DataCollatorWithFlattening

    from tuneforge.runner import cpu_attention

    tiny.set_attn_implementation("sdpa")
    if attn.startswith("cpu-"):
        monkeypatch.setattr(cpu_attention, "EAGER_CPU_MAX_QUERY", 10_000 if attn == "cpu-eager-branch" else 0)
        assert cpu_attention.use(tiny, 64, "cpu").startswith("eager")
        if boundaries == "unhooked":
            tiny._tuneforge_attn_restore[1].remove()
    else:
        tiny.set_attn_implementation(attn)

    seqs = _examples()
    collate = DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=boundaries == "cu_seq_lens")
    batch = collate([{"input_ids": s, "labels": s} for s in seqs])
    assert batch["input_ids"].shape == (1, sum(map(len, seqs))) and "attention_mask" not in batch
    extra = {k: v for k, v in batch.items() if k.startswith(("cu_seq", "max_length"))}
    try:
        with torch.no_grad():
            packed = tiny(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **extra).logits[0]
            alone = torch.cat([tiny(input_ids=torch.tensor([s])).logits[0] for s in seqs])
            # the same tokens concatenated without per-example positions DO see each other: the check can fail
            leaky = tiny(input_ids=batch["input_ids"]).logits[0]
    finally:
        cpu_attention.restore(tiny)
    assert_close_fp32(packed, alone)
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
    assert_close_fp32(packed, sum(sums) / sum(len(s) - 1 for s in seqs))


@pytest.mark.parametrize("branch", ["eager", "sdpa"])
def test_a_packed_training_step_has_the_padded_batch_loss_and_gradients(tiny_model_dir, branch, monkeypatch):
    """What packing by default on CPU relies on: the training loss (logits at labelled positions
    only) and the LoRA gradients of a packed batch are those of the same examples padded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.runner import cpu_attention, head_loss, packing

    monkeypatch.setattr(cpu_attention, "EAGER_CPU_MAX_QUERY", 10_000 if branch == "eager" else 0)
    recipe = recipe_from_dict({"name": "x", "data": {"train": [{"path": "unused.jsonl"}]}})
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    base.config.use_cache = False
    assert cpu_attention.use(base, 64, "cpu") and packing.packing_on(recipe, base.config._attn_implementation)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for n, prompt in zip((7, 12, 5, 9), (3, 5, 2, 9)):  # the last example has no labelled token
        ids = torch.randint(10, 4000, (n,), generator=torch.Generator().manual_seed(n)).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * n, "labels": [-100] * prompt + ids[prompt:]})
    runs = []
    for packed in (False, True):
        batch = packing.collator(tok, packed)([dict(r) for r in rows])
        assert ("attention_mask" in batch) != packed
        model.zero_grad()
        loss = head_loss.label_positions_loss(model, batch, torch.tensor(sum(n - p - 1 for n, p in ((7, 3), (12, 5), (5, 2)))))
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    assert_close_fp32(runs[1][0], runs[0][0])
    for got, want in zip(runs[1][1], runs[0][1]):
        assert_close_fp32(got, want)


def test_packing_auto_is_on_where_cpu_attention_runs_only():
    from tuneforge.runner.packing import packing_expected, packing_on
    from tuneforge.runner.cpu_attention import CPU_ATTENTION

    auto = recipe_from_dict({"name": "x", "data": {"train": [{"path": "unused.jsonl"}]}})
    assert auto.speed.packing == "auto"
    assert packing_on(auto, CPU_ATTENTION) and packing_expected(auto, "cpu")
    assert not packing_on(auto, "sdpa") and not packing_expected(auto, "cuda")
    compiled = recipe_from_dict({"name": "x", "data": {"train": [{"path": "unused.jsonl"}]}, "speed": {"torch_compile": True}})
    assert not packing_on(compiled, CPU_ATTENTION)  # new shapes every step would recompile
    off = recipe_from_dict({"name": "x", "data": {"train": [{"path": "unused.jsonl"}]}, "speed": {"packing": False}})
    assert not packing_on(off, CPU_ATTENTION)
    on = recipe_from_dict({"name": "x", "data": {"train": [{"path": "unused.jsonl"}]}, "speed": {"packing": True}})
    assert packing_on(on, "sdpa") and packing_expected(on, "cuda")


def test_a_packed_run_trains(tiny_model_dir, tmp_path):
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"name {i}", "output": "x " * (i + 1)}) + "\n" for i in range(8)))
    rec = recipe_from_dict({
        "name": "p", "model": {"name_or_path": str(tiny_model_dir)},  # packing: auto -> on, on CPU
        "data": {"train": [{"path": str(data)}], "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1}, "output": {"runs_dir": str(tmp_path)},
    })
    res = train(rec, progress_mode="plain")
    assert json.loads(res.run.status.read_text())["state"] == "finished"
    assert "packing on: padding-free batches (auto)" in res.run.log.read_text()
