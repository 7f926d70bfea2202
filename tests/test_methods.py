"""Training methods on the tiny real Llama: what trains is exactly what the method says, the
LoRA variants are really configured, QLoRA layers are really 4/8-bit, and every method trains."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.runner import cpu_attention, methods
from tuneforge.runner.device import Placement
from tuneforge.runner.errors import RecipeError, TuneforgeError
from tuneforge.runner.recipe import load_recipe, recipe_from_dict
from tuneforge.runner.model import ResolvedModel, load_model

BASE = {"data": {"train": [{"path": "train.jsonl"}]}, "device": "cpu"}
CPU_FP32 = Placement("cpu", "fp32", "test")
CPU_BF16 = Placement("cpu", "bf16", "test")
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def errors_of(extra: dict) -> list[str]:
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict({**BASE, **extra})
    return exc.value.errors


# ------------------------------------------------------------------------------------------
# validation: impossible combinations are refused with the fix named


def test_existing_recipes_still_validate_and_default_to_lora(tmp_path):
    from pathlib import Path

    rec = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")
    assert rec.method == "lora" and rec.lora.use_dora is False and rec.speed.group_by_length is True
    assert recipe_from_dict(dict(BASE)).method == "lora"


@pytest.mark.parametrize("extra, needle, fix", [
    ({"method": "qlora", "lora": {"init": "pissa"}}, "lora.init 'pissa' needs full-precision", "fix: use method: lora with init: pissa"),
    ({"method": "full", "qlora": {"bits": 8}}, "qlora settings were given but method is 'full'", "fix: method: qlora"),
    ({"precision": "fp16"}, "precision 'fp16' is not supported for training on CPU", "fix: precision: auto"),
    ({"method": "freeze", "freeze": {"layers": 0}}, "trains nothing", "fix: set freeze.layers"),
    ({"method": "qlora", "device": "mps"}, "needs bitsandbytes, which does not run on mps", "fix: use method: lora"),
    ({"speed": {"packing": True, "torch_compile": True}}, "recompile at every step", "fix: turn off one"),
])
def test_impossible_combinations_are_refused_with_the_fix(extra, needle, fix):
    (err,) = errors_of(extra)
    assert needle in err and fix in err


def test_method_and_section_values_are_checked():
    errs = errors_of({"method": "dora", "qlora": {"bits": 3}, "lora": {"loraplus_lr_ratio": 0.5}})
    assert any(e.startswith("method: Input should be 'full', 'freeze', 'lora' or 'qlora'") for e in errs)
    assert any(e.startswith("qlora.bits: Input should be 4 or 8") for e in errs)
    assert any(e.startswith("lora.loraplus_lr_ratio: Input should be greater than or equal to 1") for e in errs)


# ------------------------------------------------------------------------------------------
# what trains


def _recipe(tiny, **extra):
    d = {**BASE, "model": {"name_or_path": str(tiny)}, **extra}
    return recipe_from_dict(d)


def _loaded(tiny, placement=CPU_FP32, **extra):
    rec = _recipe(tiny, **extra)
    model = load_model(ResolvedModel(str(tiny), str(tiny), "local"), **methods.load_options(rec, placement))
    cpu_attention.use(model, rec.data.max_length, placement.device)
    return rec, methods.apply_method(model, rec)


def _trainable(model) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_every_weight(tiny_model_dir):
    _, model = _loaded(tiny_model_dir, method="full")
    assert sum(_trainable(model).values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("side, layer", [("last", 1), ("first", 0)])
def test_freeze_trains_only_the_named_layers(tiny_model_dir, side, layer):
    _, model = _loaded(tiny_model_dir, method="freeze", freeze={"layers": 1, "side": side, "modules": ["norm"]})
    names = _trainable(model)
    block = {n: k for n, k in names.items() if n.startswith(f"model.layers.{layer}.")}
    assert set(names) == set(block) | {"model.norm.weight"}
    expected = sum(p.numel() for p in model.model.layers[layer].parameters()) + 64
    assert sum(names.values()) == expected
    assert not any(n.startswith(f"model.layers.{1 - layer}.") for n in names)


def test_freeze_rejects_unknown_modules_and_too_many_layers(tiny_model_dir):
    with pytest.raises(TuneforgeError, match="no module is named 'nrom'") as exc:
        _loaded(tiny_model_dir, method="freeze", freeze={"layers": 1, "modules": ["nrom"]})
    assert "norm" in exc.value.fix
    with pytest.raises(TuneforgeError, match="has only 2 layers"):
        _loaded(tiny_model_dir, method="freeze", freeze={"layers": 5})


def test_lora_trains_exactly_the_adapters(tiny_model_dir):
    _, model = _loaded(tiny_model_dir, lora={"r": 4, "modules_to_save": ["model.norm"]})
    names = _trainable(model)
    adapters = {n for n in names if ".lora_A." in n or ".lora_B." in n}
    assert {n.split(".")[-4] for n in adapters} == set(PROJ) and len(adapters) == 2 * len(PROJ) * 2
    assert set(names) - adapters == {"base_model.model.model.norm.modules_to_save.default.weight"}
    h, i, r = 64, 128, 4  # tiny: hidden 64, intermediate 128, 4 heads x 16, 2 kv heads x 16
    per_layer = r * ((h + h) + (h + 32) * 2 + (h + h) + (h + i) * 2 + (i + h))
    assert sum(names.values()) == 2 * per_layer + h


def test_dora_rslora_are_configured_in_the_modules(tiny_model_dir):
    _, model = _loaded(tiny_model_dir, lora={"r": 4, "alpha": 8, "use_dora": True, "use_rslora": True})
    cfg = model.peft_config["default"]
    assert cfg.use_dora and cfg.use_rslora
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.use_dora["default"] is True and "default" in q.lora_magnitude_vector
    assert math.isclose(q.scaling["default"], 8 / math.sqrt(4))  # rsLoRA: alpha / sqrt(r), not alpha / r
    assert any("lora_magnitude_vector" in n for n in _trainable(model))


def test_pissa_initialises_from_the_weights_and_saves_a_plain_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rec, model = _loaded(tiny_model_dir, lora={"r": 4, "init": "pissa"})
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert model.peft_config["default"].init_lora_weights == "pissa"
    assert q.lora_B["default"].weight.abs().sum() > 0  # default init has B = 0; PiSSA starts from the SVD
    ids = torch.tensor([[1, 20, 300, 4000, 50]])
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.eval()  # no adapter dropout while comparing
    with torch.no_grad():
        # PiSSA rewrites each W as W_res + B A (an fp32 SVD, eps 1.2e-7): the same function up to
        # rounding that AVX2 and AVX-512 kernels accumulate in different orders, ~1e-6 relative here
        torch.testing.assert_close(model(input_ids=ids).logits, original(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
        for n, p in model.named_parameters():  # stand in for training: move the adapters
            if "lora_" in n:
                p.add_(torch.randn_like(p) * 0.02)
        trained = model(input_ids=ids).logits
    methods.save_pretrained(model, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter").eval()
    with torch.no_grad():  # the converted adapter applies to the unchanged base model
        # the saved adapter is converted to plain LoRA (W_res + B A - W, in fp32): rounding again
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trained, rtol=1e-3, atol=1e-3)


def test_loraplus_gives_the_b_matrices_a_larger_learning_rate(tiny_model_dir):
    from transformers import TrainingArguments

    rec, model = _loaded(tiny_model_dir, lora={"r": 4, "loraplus_lr_ratio": 16}, train={"learning_rate": 1e-4})
    args = TrainingArguments(output_dir="unused", learning_rate=1e-4, use_cpu=True,
                             **methods.optimizer_args(rec, "cpu"))
    opt = methods.make_optimizer(model, rec, args)
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr: dict[float, set[str]] = {}
    for g in (g for g in opt.param_groups if g["params"]):
        by_lr.setdefault(g["lr"], set()).update(names[id(p)] for p in g["params"])
    assert set(by_lr) == {1e-4, 1.6e-3}
    assert all(".lora_A." in n for n in by_lr[1e-4]) and all(".lora_B." in n for n in by_lr[1.6e-3])
    assert methods.make_optimizer(model, _recipe(tiny_model_dir), args) is None  # plain LoRA: the Trainer's own


def test_lora_stores_the_frozen_base_in_bf16_and_adapters_in_fp32(tiny_model_dir):
    import torch

    _, model = _loaded(tiny_model_dir, CPU_BF16, lora={"r": 4})
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.base_layer.weight.dtype == torch.bfloat16
    assert q.lora_A["default"].weight.dtype == torch.float32


@pytest.mark.parametrize("bits, quant_type, double", [(4, "nf4", True), (4, "fp4", False), (8, "nf4", True)])
def test_qlora_base_layers_are_really_quantized(tiny_model_dir, bits, quant_type, double):
    import bitsandbytes as bnb
    import torch

    _, model = _loaded(tiny_model_dir, CPU_BF16, method="qlora", lora={"r": 4},
                       qlora={"bits": bits, "quant_type": quant_type, "double_quant": double})
    layers = [m for n, m in model.named_modules() if n.endswith(PROJ) and hasattr(m, "base_layer")]
    assert len(layers) == 2 * len(PROJ)
    for m in layers:
        base = m.base_layer
        if bits == 4:
            assert isinstance(base, bnb.nn.Linear4bit) and base.weight.dtype == torch.uint8
            assert base.weight.quant_state.quant_type == quant_type
            assert (base.weight.quant_state.nested is True) == double
        else:
            assert isinstance(base, bnb.nn.Linear8bitLt) and base.weight.dtype == torch.int8
    names = _trainable(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)


def test_full_uses_fused_adamw_on_cpu_and_8bit_adamw_when_asked():
    rec = recipe_from_dict({**BASE, "method": "full"})
    assert methods.optimizer_args(rec, "cpu") == {"optim": "adamw_torch_fused"}
    rec8 = recipe_from_dict({**BASE, "method": "full", "full": {"optim": "adamw_8bit"}})
    assert methods.optimizer_args(rec8, "cpu") == {"optim": "adamw_bnb_8bit"}


# ------------------------------------------------------------------------------------------
# one short real training per method


@pytest.mark.parametrize("method, extra, weights", [
    ("full", {"full": {"optim": "adamw_8bit"}}, "model"),
    ("freeze", {"freeze": {"layers": 1}}, "model"),
    ("lora", {"lora": {"r": 4, "use_dora": True, "use_rslora": True, "loraplus_lr_ratio": 8}}, "adapter"),
    ("qlora", {"lora": {"r": 4}}, "adapter"),
])
def test_each_method_trains_end_to_end(tiny_model_dir, tmp_path, method, extra, weights):
    from tuneforge.runner.train import train

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {w}", "output": f"{w} {w}"}) + "\n"
                            for w in ["red", "green", "blue", "amber", "teal", "navy"]))
    rec = recipe_from_dict({
        "name": "m", "method": method, "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": [{"path": str(data)}], "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 3, "logging_steps": 1},
        "output": {"runs_dir": str(tmp_path / "runs")}, **extra,
    })
    res = train(rec, progress_mode="plain")
    status = json.loads(res.run.status.read_text())
    assert status["state"] == "finished" and status["step"] == 2
    assert status["precision"] in ("bf16", "fp32")
    assert (res.run.path / weights).is_dir() and not (res.run.path / ({"model", "adapter"} - {weights}).pop()).exists()
    log = res.run.log.read_text()
    assert f"method {method}:" in log and "speed: length-grouped batches" in log
    losses = [json.loads(ln)["loss"] for ln in res.run.metrics.read_text().splitlines() if json.loads(ln).get("loss")]
    assert losses and all(math.isfinite(x) for x in losses)
