"""The memory/time estimate: its parts add up, it gives the advice that makes a run fit, the CLI
prints it, and it lands within ±30% of the peak RSS measured in real training runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tuneforge.runner.estimate import GiB, estimate, model_shape
from tuneforge.runner.recipe import recipe_from_dict


def _alpaca_rows(path, n=16, words=60):
    path.write_text("".join(json.dumps({"instruction": f"Describe item {i}.", "output": " ".join(["word"] * (words + 7 * i))}) + "\n"
                            for i in range(n)))
    return path


def _recipe(model_dir, data, max_length=256, **extra):
    d = {"model": {"name_or_path": str(model_dir)}, "device": "cpu",
         "data": {"train": [{"path": str(data)}], "max_length": max_length}, **extra}
    return recipe_from_dict(d)


def test_model_shape_counts_parameters_from_config_alone(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    shape = model_shape(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.layers == 2 and shape.vocab == model.config.vocab_size and shape.tied


def test_parts_add_up_and_methods_order_as_expected(tiny_model_dir, tmp_path):
    data = _alpaca_rows(tmp_path / "a.jsonl")
    common = dict(device="cpu", precision="bf16", flops=1e11, available_bytes=64 * GiB)
    ests = {m: estimate(_recipe(tiny_model_dir, data, method=m), **common) for m in ("full", "freeze", "lora", "qlora")}
    for e in ests.values():
        assert e.fits and e.peak_bytes >= e.weights_bytes + e.gradients_bytes + e.optimizer_bytes + e.activations_bytes
        assert e.seconds_per_epoch > 0 and e.tokens_per_epoch > 16 * 60
    assert ests["qlora"].weights_bytes < ests["lora"].weights_bytes < ests["full"].weights_bytes
    assert ests["lora"].optimizer_bytes < ests["freeze"].optimizer_bytes < ests["full"].optimizer_bytes
    eight = estimate(_recipe(tiny_model_dir, data, method="full", full={"optim": "adamw_8bit"}), **common)
    assert eight.optimizer_bytes * 4 == ests["full"].optimizer_bytes


def test_a_run_that_does_not_fit_gets_advice_and_auto_checkpointing(tiny_model_dir, tmp_path):
    from tuneforge.runner.speed import checkpointing_needed

    rec = _recipe(tiny_model_dir, _alpaca_rows(tmp_path / "a.jsonl"), max_length=1024, method="full")
    lengths = [900, 1000, 700, 800] * 8
    roomy = estimate(rec, lengths, 32, "cpu", "bf16", flops=1e11, available_bytes=64 * GiB)
    assert roomy.fits and not roomy.checkpointing and checkpointing_needed(rec, roomy)[0] is False
    tight = estimate(rec, lengths, 32, "cpu", "bf16", flops=1e11, available_bytes=int(roomy.peak_bytes * 0.9))
    assert tight.checkpointing and tight.activations_bytes < roomy.activations_bytes
    assert checkpointing_needed(rec, tight) == (True, "auto: the memory estimate says the run needs it")
    tiny = estimate(rec, lengths, 32, "cpu", "bf16", flops=1e11, available_bytes=GiB // 4)
    assert not tiny.fits
    advice = " | ".join(tiny.advice)
    assert "method: qlora" in advice and "data.max_length" in advice and "train.batch_size" in advice
    off = estimate(rec.model_copy(update={"speed": rec.speed.model_copy(update={"gradient_checkpointing": False})}),
                   lengths, 32, "cpu", "bf16", flops=1e11, available_bytes=GiB // 4)
    assert any("gradient_checkpointing" in a for a in off.advice)


def test_validate_prints_the_estimate_as_yaml_comments(tiny_model_dir, tmp_path, run_cli):
    data = _alpaca_rows(tmp_path / "a.jsonl")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)}, "data": {"train": [{"path": str(data)}]}}))
    out = run_cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["method"] == "lora"  # still a valid recipe
    comments = [ln for ln in out.stdout.splitlines() if ln.startswith("# ")]
    assert comments[0] == "# estimate for this machine:"
    assert any(ln.startswith("# weights ") for ln in comments) and any("available: fits" in ln for ln in comments)
    assert any(ln.startswith("# time per epoch ~") for ln in comments)


MEASURE = """
import json, resource, statistics, sys, time
import transformers.trainer
from transformers import TrainerCallback
from tuneforge.runner.device import choose
from tuneforge.runner.estimate import matmul_flops
from tuneforge.runner.recipe import recipe_from_dict
from tuneforge.runner.train import train

recipe = recipe_from_dict(json.loads(sys.argv[1]))
precision = choose(recipe.device, recipe.precision).precision

def cpu_rate():  # the estimator's own measurement in the run's precision, per CPU second of this process
    c, w = time.process_time(), time.perf_counter()
    rate = matmul_flops(precision)
    return rate * (time.perf_counter() - w) / (time.process_time() - c)

steps, rates = [], []
class StepClock(TrainerCallback):
    def on_step_begin(self, *args, **kwargs):
        self.t = time.process_time(), time.perf_counter()
    def on_step_end(self, *args, **kwargs):
        steps.append((time.process_time() - self.t[0], time.perf_counter() - self.t[1]))
        rates.append(cpu_rate())  # between the steps: under the same load as they ran

transformers.trainer.DEFAULT_CALLBACKS.append(StepClock)  # every Trainer built here times its steps
train(recipe, progress_mode="plain")
print("TIMES", json.dumps({"steps": steps, "rate": statistics.median(rates), "precision": precision}))
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


# auto: bf16 autocast on CPUs with native bf16, fp32 elsewhere; fp32 set: both precisions are
# checked on a bf16 CPU.
@pytest.mark.parametrize("method, batch, max_length, precision", [("lora", 4, 256, "auto"), ("full", 2, 128, "fp32")])
def test_estimate_is_within_30_percent_of_the_measured_peak_and_epoch_time(smollm2_dir, tmp_path, method, batch,
                                                                           max_length, precision):
    data = _alpaca_rows(tmp_path / "a.jsonl", n=12, words=40)
    d = {"name": "m", "method": method, "model": {"name_or_path": str(smollm2_dir)}, "device": "cpu",
         "precision": precision, "data": {"train": [{"path": str(data)}], "max_length": max_length},
         "train": {"epochs": 1, "batch_size": batch}, "output": {"runs_dir": str(tmp_path / "runs")}}  # every batch: the longest too
    recipe = recipe_from_dict(d)
    est = estimate(recipe)
    proc = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(d)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = int(proc.stdout.split("PEAK")[-1])
    print(f"{method}: estimated {est.peak_bytes / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB")
    assert 0.7 * measured <= est.peak_bytes <= 1.3 * measured

    # Time per epoch, in CPU seconds of the training process on both sides: on a shared machine (CI's
    # own processes, other users) wall time depends on who else runs, CPU time on the work done. The
    # estimate gets the matmul rate the child measured per CPU second between its steps (the same
    # load and caches); the epoch is its steady steps (the first one also warms up allocators and
    # kernels) times the number of steps.
    times = json.loads(proc.stdout.split("TIMES")[-1].split("\n")[0])
    cpu = [c for c, _ in times["steps"]]
    epoch = sum(cpu[1:]) / (len(cpu) - 1) * len(cpu)
    guess = estimate(recipe, flops=times["rate"]).seconds_per_epoch
    wall = sum(w for _, w in times["steps"])
    print(f"{method} {times['precision']}: estimated {guess:.1f} s per epoch, measured {epoch:.1f} CPU s "
          f"({wall:.1f} s wall), matmul {times['rate'] / 1e9:.0f} GFLOP/s per CPU second")
    assert 0.7 * epoch <= guess <= 1.3 * epoch


# --- what each training stage adds (estimate_stages.py) -------------------------------------------


def _stage_estimates(model_dir, data, lengths, **stages):
    common = dict(device="cpu", precision="bf16", flops=1e11, available_bytes=64 * GiB)
    return {name: estimate(_recipe(model_dir, data, **extra), list(lengths), None, **common) for name, extra in stages.items()}


def test_pairs_references_and_kl_each_add_their_cost(tiny_model_dir, tmp_path):
    """Lengths are per trained sequence: the same 32 sequences are 32 sft rows or 16 pairs."""
    data = _alpaca_rows(tmp_path / "a.jsonl")
    e = _stage_estimates(
        tiny_model_dir, data, [120] * 32,
        sft={}, orpo={"stage": "orpo"}, dpo={"stage": "dpo"}, rm={"stage": "rm"},
        pre={"stage": "dpo", "dpo": {"reference": {"kind": "precomputed"}}},
        kto={"stage": "kto"}, kto_apo={"stage": "kto", "kto": {"loss_type": "apo_zero_unpaired"}})
    assert len({x.tokens_per_epoch for x in e.values()}) == 1  # the same tokens trained in every case
    # two sequences per row: a batch of 8 pairs holds 16 sequences' layer activations (the head's
    # logits, chunked for LoRA, stay one chunk)
    assert e["orpo"].activations_bytes > e["sft"].activations_bytes
    assert e["orpo"].seconds_per_epoch == pytest.approx(e["sft"].seconds_per_epoch, rel=1e-3)
    # reference 'base': one no-grad forward more per sequence, no second copy of the weights
    fwd = e["dpo"].seconds_per_epoch - e["orpo"].seconds_per_epoch
    assert fwd > 0 and e["dpo"].weights_bytes == e["orpo"].weights_bytes
    # 'precomputed': nothing per step, the same forward once before training
    assert e["pre"].seconds_per_epoch == pytest.approx(e["orpo"].seconds_per_epoch)
    assert e["pre"].once_seconds == pytest.approx(fwd) and e["dpo"].once_seconds is None
    assert any("once" in ln for ln in e["pre"].lines())
    # kto (one sequence per row): the KL pass plus the reference on rows and KL pairs = 3 forwards;
    # apo_zero_unpaired has no KL term: 1 (the reference on the rows)
    assert e["kto"].seconds_per_epoch - e["sft"].seconds_per_epoch == pytest.approx(3 * fwd, rel=0.02)
    assert e["kto_apo"].seconds_per_epoch - e["sft"].seconds_per_epoch == pytest.approx(fwd, rel=0.02)
    # rm: a one-output score head, no vocabulary logits
    assert e["rm"].activations_bytes < e["orpo"].activations_bytes
    assert e["rm"].seconds_per_epoch < e["orpo"].seconds_per_epoch
    assert any(n.startswith("stage dpo: two sequences per row") for n in e["dpo"].lines())
    assert any(n.startswith("dpo.reference base:") for n in e["dpo"].lines())


def test_a_reference_model_is_a_second_copy_of_the_weights(tiny_model_dir, tmp_path):
    data = _alpaca_rows(tmp_path / "a.jsonl")
    e = _stage_estimates(tiny_model_dir, data, [120] * 32, orpo={"stage": "orpo", "method": "full"},
                         ref={"stage": "dpo", "method": "full", "dpo": {"reference": {"kind": "model", "model": str(tiny_model_dir)}}})
    shape = model_shape(str(tiny_model_dir))
    assert e["ref"].weights_bytes - e["orpo"].weights_bytes == shape.params * 4  # fp32 storage for a full run on CPU
    assert e["ref"].seconds_per_epoch > e["orpo"].seconds_per_epoch


def test_pt_trains_packed_blocks_of_max_length(tiny_model_dir, tmp_path):
    data = _alpaca_rows(tmp_path / "a.jsonl")
    e = _stage_estimates(tiny_model_dir, data, [50] * 32, sft={},
                         pt={"stage": "pt"}, docs={"stage": "pt", "pt": {"concatenate": False}})
    assert e["pt"].tokens_per_epoch == e["sft"].tokens_per_epoch == 1600  # the same tokens, no padding added
    assert e["pt"].activations_bytes > e["docs"].activations_bytes  # a batch of 256-token blocks, not 50-token docs
    assert any("packed max_length blocks" in ln for ln in e["pt"].lines())


def test_preference_data_counts_both_replies(tiny_model_dir):
    from conftest import shared

    from tuneforge.runner.data import tokenize_for, tokenizer_for
    from tuneforge.runner.estimate import token_counts

    recipe = recipe_from_dict({"stage": "dpo", "model": {"name_or_path": str(tiny_model_dir)}, "device": "cpu",
                               "data": {"train": [{"path": str(shared("dpo_en_demo.json")), "max_samples": 24}]}})
    lengths, labelled, rows = token_counts(recipe, sample=24)
    tok, template, _ = tokenizer_for(str(tiny_model_dir))
    prep = tokenize_for(recipe.data, tok, template, recipe.seed, "dpo", sample=24)
    assert rows == 24 and lengths == [n for t in prep.train for n in (len(t.input_ids), len(t.rejected_ids))]
    assert all(0 < lab <= n for lab, n in zip(labelled, lengths))


def test_validate_prints_what_the_stage_adds(tiny_model_dir, tmp_path, run_cli):
    from conftest import shared

    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump({"stage": "dpo", "model": {"name_or_path": str(tiny_model_dir)},
                                    "data": {"train": [{"path": str(shared("dpo_en_demo.json")), "max_samples": 16}]}}))
    out = run_cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert "# stage dpo: two sequences per row (prompt+chosen, prompt+rejected)" in out.stdout
    assert "# dpo.reference base: the adapter switched off" in out.stdout
