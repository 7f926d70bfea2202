"""The packed, response-only forward of the preference stages (runner/stages/logps.py) computes
exactly what TRL's fused head computes on the padded batch: per-token log-probs, their sums per
sequence, and the gradients they send back, on real pairs tokenized by the data layer."""

from __future__ import annotations

import pytest
import torch

from conftest import shared


def _pairs_batch(tiny_model_dir, n=4):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from tuneforge.runner.data import tokenize_for
    from tuneforge.runner.data.template import resolve_chat_template
    from tuneforge.runner.recipe import DataSpec
    from tuneforge.runner.stages import rows
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template, _ = resolve_chat_template(tok, "auto")
    spec = DataSpec(train=[{"path": str(shared("dpo_en_demo.json")), "max_samples": 24}], max_length=320,
                    truncation="keep_end", on_bad_rows="skip", cache=False)
    items = [t for t in tokenize_for(spec, tok, template, 0, stage="dpo").train if not t.truncated][:n]
    cols = rows.pair_columns(items)
    examples = [{k: cols[k][i] for k in cols} for i in range(len(items))]
    return DataCollatorForPreference(pad_token_id=tok.pad_token_id)(examples)


def _model(tiny_model_dir, lora: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.runner import cpu_attention

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cpu_attention.use(model, 1024, "cpu")
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    return model


@pytest.mark.parametrize("packed", [True, False])
def test_packed_response_log_probs_equal_trls_padded_forward(tiny_model_dir, packed):
    from trl.trainer.utils import add_fused_lm_head

    from tuneforge.runner.stages import logps

    batch = _pairs_batch(tiny_model_dir)
    assert batch["attention_mask"].eq(0).any(), "the batch must hold padding for the test to mean anything"
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    results = []
    for ours in (False, True):
        model = _model(tiny_model_dir, lora=True)
        bare = logps.bare(model)
        add_fused_lm_head(bare, outputs=logps.OUTPUTS)
        if ours:
            assert logps.install(bare, packed)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                    fused_lm_head=True)
        out.log_probs.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out, grads))
    (ref, ref_grads), (got, got_grads) = results
    mask = labels[:, 1:] != -100
    torch.testing.assert_close(got.log_probs * mask, ref.log_probs * mask, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.log_probs.sum(1), ref.log_probs.sum(1), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(got.is_top1 * mask, ref.is_top1 * mask)
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], rtol=1e-3, atol=1e-5)


def test_rows_cut_pairs_at_the_shared_prompt_and_the_replies_last_trained_token(tiny_model_dir):
    from tuneforge.runner.stages import rows

    batch = _pairs_batch(tiny_model_dir, n=2)
    n = batch["input_ids"].shape[0] // 2
    for i in range(n):
        chosen, rejected = batch["completion_mask"][i], batch["completion_mask"][n + i]
        first_c, first_r = int(chosen.argmax()), int(rejected.argmax())
        assert first_c == first_r > 0  # one prompt, the same length for both replies
        assert torch.equal(batch["input_ids"][i, :first_c], batch["input_ids"][n + i, :first_r])
    assert rows.common_prefix([1, 2, 3], [1, 2, 4]) == 2 and rows.reply_end([-100, 5, 6, -100]) == 3


def test_packed_reward_forward_scores_like_the_padded_classifier(tiny_model_dir):
    """Stage rm with packing: the same scores (at transformers' scored token: the last one that is not
    the pad token) and gradients as the sequence classifier's own padded forward."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from tuneforge.runner import cpu_attention
    from tuneforge.runner import model as model_mod
    from tuneforge.runner.stages import logps, rows

    from tuneforge.runner.data import tokenize_for
    from tuneforge.runner.data.template import resolve_chat_template
    from tuneforge.runner.recipe import DataSpec
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = DataSpec(train=[{"path": str(shared("dpo_en_demo.json")), "max_samples": 24}], max_length=320,
                    truncation="keep_end", on_bad_rows="skip", cache=False)
    items = tokenize_for(spec, tok, resolve_chat_template(tok, "auto")[0], 0, stage="dpo").train[:4]
    cols = rows.reward_columns(items)
    padded = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([{k: cols[k][i] for k in cols} for i in range(4)])
    results = []
    for ours in (False, True):
        torch.manual_seed(0)
        model = model_mod.load_model(model_mod.resolve(str(tiny_model_dir)), "fp32", task="reward")
        cpu_attention.use(model, 1024, "cpu")
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="SEQ_CLS", modules_to_save=["score"], init_lora_weights=False))
        if ours:
            assert logps.install_reward(logps.bare(model))
        scores = model(**padded, use_cache=False).logits
        scores.sum().backward()
        results.append((scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (ref, ref_grads), (got, got_grads) = results
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], rtol=1e-3, atol=1e-5)
