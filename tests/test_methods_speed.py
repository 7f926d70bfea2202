"""The training pieces (sampler, CPU attention, head-only loss, the Trainer that plugs them in)
compute what the plain model and Trainer compute, only faster.

Tolerances: fp32 results of the same math summed in another order (chunked head vs whole, the
Trainer's path vs ours, AVX2 vs AVX-512 kernels) agree to a few hundred ulps (fp32 eps 1.2e-7) of
the tensor's scale: rtol 1e-4 on each element, atol 1e-5 of the tensor's largest value (for the
elements near zero that are differences of larger terms). bf16 (eps 7.8e-3) gets percent-level
tolerances. A real bug (a leaked mask, a dropped position) moves values by far more.
"""

from __future__ import annotations

import math
import random

import pytest

from tuneforge.runner.recipe import recipe_from_dict
from tuneforge.runner.sampler import LengthGroupedBatches
from tuneforge.runner.speed import trainer_args


def assert_close_fp32(got, want):
    import torch

    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-12)


def _padding(order, lengths, batch):
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / computed


def test_grouped_batches_cover_every_example_with_little_padding_and_stay_random():
    rng = random.Random(1)
    lengths = [rng.choice([50, 55, 60]) for _ in range(60)] + [rng.randint(80, 512) for _ in range(40)]
    sampler = LengthGroupedBatches(lengths, batch_size=4, seed=42)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(100))
    assert first != second  # a new order every epoch
    shuffled = list(range(100))
    rng.shuffle(shuffled)
    assert _padding(first, lengths, 4) < 0.1 < 0.3 < _padding(shuffled, lengths, 4)
    assert list(LengthGroupedBatches(lengths, 4, 42)) == first  # reproducible from the seed


def test_group_by_length_is_the_default_and_can_be_turned_off(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tuneforge.runner.stages.sft import tokens_dataset as _to_dataset
    from tuneforge.runner.trainer import trainer_class

    class Item:
        def __init__(self, n):
            self.input_ids, self.labels = list(range(5, 5 + n)), list(range(5, 5 + n))

    base = {"data": {"train": [{"path": "x.jsonl"}]}}
    on = recipe_from_dict(base)
    off = recipe_from_dict(base, ["speed.group_by_length=false"])
    assert on.speed.group_by_length and not off.speed.group_by_length
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", per_device_train_batch_size=2,
                             **trainer_args(on, False))
    data = _to_dataset([Item(n) for n in (3, 9, 4, 8)])
    samplers = [type(trainer_class()(model=model, args=args, train_dataset=data,
                                     length_grouped=r.speed.group_by_length)._get_train_sampler())
                for r in (on, off)]
    assert samplers[0] is LengthGroupedBatches and samplers[1] is not LengthGroupedBatches
    assert trainer_args(on, True)["gradient_checkpointing"] is True


def test_loss_on_labelled_positions_only_equals_the_full_loss_and_gradients(tiny_model_dir):
    """The head runs only where a label is predicted; loss and LoRA gradients stay the same."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.runner.head_loss import frozen_plain_head, label_positions_loss

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    assert frozen_plain_head(model.get_base_model()) is not None  # the chunked head loss is what runs
    ids = torch.randint(5, 1000, (2, 12))
    labels = ids.clone()
    labels[0, :5] = labels[1, :8] = -100  # prompts
    labels[1, 10:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    grads = []
    for fn in (lambda: model(**inputs, num_items_in_batch=torch.tensor(9)).loss,
               lambda: label_positions_loss(model, inputs, torch.tensor(9))):
        model.zero_grad()
        loss = fn()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    assert_close_fp32(grads[1][0], grads[0][0])
    for got, want in zip(grads[1][1], grads[0][1]):
        assert_close_fp32(got, want)


@pytest.mark.parametrize("branch", ["eager", "sdpa"])
def test_cpu_attention_matches_sdpa_on_a_padded_batch(tiny_model_dir, branch, monkeypatch):
    """CPU training's per-batch attention choice (eager for short rows, SDPA for long) computes what
    the model's own SDPA attention computes, padding included, and training restores SDPA after."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.runner import cpu_attention

    monkeypatch.setattr(cpu_attention, "EAGER_CPU_MAX_QUERY", 10_000 if branch == "eager" else 0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    assert cpu_attention.use(model, 64, "cpu").startswith("eager for rows up to")
    assert model.config._attn_implementation == cpu_attention.CPU_ATTENTION
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits
    assert_close_fp32(got[0], want[0])
    assert_close_fp32(got[1, :9], want[1, :9])  # real tokens of the padded row
    cpu_attention.restore(model)
    assert model.config._attn_implementation == "sdpa"
    assert not model.get_decoder()._forward_pre_hooks  # the segments hook went with it
    assert cpu_attention.use(model, 64, "cuda") == "sdpa"  # GPUs keep their kernels


def test_uncast_adapter_inputs_give_bit_identical_loss_and_gradients(tiny_model_dir):
    """Skipping peft's fp32 cast of adapter inputs under bf16 autocast changes nothing but speed,
    and the model works without autocast again afterwards (chat and export use it so)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.runner.head_loss import label_positions_loss
    from tuneforge.runner.trainer import adapter_inputs_uncast

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)  # bf16 frozen base
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # fp32 adapters
    ids = torch.randint(5, 1000, (2, 16), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :6] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    runs = []
    for uncast in (False, True):
        model.zero_grad()
        with adapter_inputs_uncast(model, uncast), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = label_positions_loss(model, inputs)
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    with adapter_inputs_uncast(model, True):
        assert not model.base_model.model.model.layers[0].self_attn.q_proj.cast_input_dtype_enabled
    # bit-identical on any CPU: the same kernels see the same bf16 values either way
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    with torch.no_grad():  # casting is back: bf16 activations meet fp32 adapters without autocast
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_eval_loss_with_labelled_positions_only_equals_the_full_eval_loss(tiny_model_dir, tmp_path):
    """The trainer's eval (prediction_step) runs the head only at labelled positions: same loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, TrainingArguments

    from tuneforge.runner.stages.sft import tokens_dataset as _to_dataset
    from tuneforge.runner.trainer import trainer_class

    class Item:
        def __init__(self, ids, labels):
            self.input_ids, self.labels = ids, labels

    g = torch.Generator().manual_seed(3)
    items = []
    for n, prompt in ((14, 5), (9, 3), (20, 12)):
        ids = torch.randint(5, 1000, (n,), generator=g).tolist()
        items.append(Item(ids, [-100] * prompt + ids[prompt:]))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    losses = []
    for only in (True, False):
        args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=3, use_cpu=True,
                                 report_to="none", prediction_loss_only=only)
        trainer = trainer_class()(model=model, args=args, eval_dataset=_to_dataset(items),
                                  data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        losses.append(trainer.evaluate()["eval_loss"])
    assert math.isclose(losses[0], losses[1], rel_tol=1e-5)  # fp32, summed in another order


def test_cpu_attention_is_not_used_where_a_sliding_window_is_shorter_than_the_cut_off():
    """Unpadded and packed rows reach cpu_attention without a mask, so it could not apply a window:
    such models keep their own attention (and masks)."""
    from transformers import MistralConfig, MistralForCausalLM

    from tuneforge.runner import cpu_attention

    cfg = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=100, attn_implementation="sdpa")
    windowed = MistralForCausalLM(MistralConfig(sliding_window=16, **cfg))
    assert cpu_attention.use(windowed, 64, "cpu") == "sdpa"
    wide = MistralForCausalLM(MistralConfig(sliding_window=4096, **cfg))
    assert cpu_attention.use(wide, 64, "cpu").startswith("eager for rows up to")


@pytest.mark.parametrize("head", ["frozen", "trained"])
def test_chunked_head_loss_matches_the_models_own_loss_under_bf16_autocast(tiny_model_dir, head, monkeypatch):
    """The frozen head's loss runs chunk by chunk (head_loss.HEAD_CHUNK) with no logits kept: loss and
    gradients match the model's own head + cross-entropy under bf16 autocast (to bf16 rounding),
    across several chunks; a trained head (here lm_head in modules_to_save) keeps the model's path."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.runner import head_loss

    monkeypatch.setattr(head_loss, "HEAD_CHUNK", 4)  # 14 labelled tokens: four chunks, the last partial
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    cfg = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False,
                     modules_to_save=["lm_head"] if head == "trained" else None)
    model = get_peft_model(base, cfg)
    assert (head_loss.frozen_plain_head(model.get_base_model()) is None) == (head == "trained")
    ids = torch.randint(5, 1000, (2, 12), generator=torch.Generator().manual_seed(4))
    labels = ids.clone()
    labels[0, :4] = labels[1, :6] = -100
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    runs = []
    for fn in (lambda: model(**inputs, num_items_in_batch=torch.tensor(14)).loss,
               lambda: head_loss.label_positions_loss(model, inputs, torch.tensor(14))):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn()
        loss.backward()
        runs.append((loss.detach().float(), [p.grad.float().clone() for p in model.parameters() if p.requires_grad]))
    # bf16 (eps 7.8e-3): the loss to 1e-3 relative, gradients to 2% of their largest element
    assert torch.allclose(runs[0][0], runs[1][0], rtol=1e-3)
    for a, b in zip(runs[0][1], runs[1][1]):
        assert (a - b).abs().max() <= 0.02 * a.abs().max() + 1e-6


def _tiny(cls_name: str, config_name: str, **extra):
    import transformers

    cfg = getattr(transformers, config_name)(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=64, **extra)
    model = getattr(transformers, cls_name)(cfg)
    for p in model.parameters():
        p.requires_grad_(False)  # a frozen base, as under LoRA
    return model


def test_chunked_head_loss_is_only_used_for_plain_heads():
    """Heads with softcapping, logit scaling or router losses compute more than lm_head + the
    standard loss: they keep the model's own path (read from their config and transformers' own
    get_output_embeddings/get_decoder), and the estimate asks the same question by model type."""
    from tuneforge.runner.head_loss import frozen_plain_head, plain_head_model_type

    plain = [_tiny("LlamaForCausalLM", "LlamaConfig"), _tiny("Qwen2ForCausalLM", "Qwen2Config")]
    bent = [_tiny("Gemma2ForCausalLM", "Gemma2Config", head_dim=8), _tiny("GraniteForCausalLM", "GraniteConfig"),
            _tiny("Qwen2MoeForCausalLM", "Qwen2MoeConfig", num_experts=2, moe_intermediate_size=16,
                  shared_expert_intermediate_size=16)]
    assert all(frozen_plain_head(m) is m.lm_head for m in plain)
    assert not any(frozen_plain_head(m) for m in bent)
    assert [plain_head_model_type(m.config.model_type) for m in plain + bent] == [True, True, False, False, False]
    trained = _tiny("LlamaForCausalLM", "LlamaConfig")
    trained.lm_head.weight.requires_grad_(True)
    assert frozen_plain_head(trained) is None  # a head that trains keeps the model's own loss
