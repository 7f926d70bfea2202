"""Learning is proven, not assumed: after a few steps on the tiny Llama, each preference stage
moves what it optimises on pairs it never trained on.

The pairs come from dpo_en_demo.json: its prompts, the first words of its chosen replies as the
chosen reply, and the same words in capitals as the rejected one. A random tiny model cannot
judge the demo's own replies (its held-out DPO loss rises as it memorises them), but capitals are
other token ids in every reply, so what a stage learns carries over to held-out rows. The reward
model's set also ends each reply with a fixed sign-off (a polite one for chosen)."""

from __future__ import annotations

import json

import torch
import yaml

from conftest import shared


def toy_pairs(tmp_path, first: int, count: int, words: int = 12, signoff: bool = False) -> str:
    """signoff: the chosen reply ends "Glad to help!", the rejected one "Whatever." (a reward model
    reads one position, the last: this makes the set separable there)."""
    rows = json.loads(shared("dpo_en_demo.json").read_text(encoding="utf-8"))[first:first + count]
    out = []
    for row in rows:
        reply = " ".join(row["chosen"]["value"].split()[:words])
        prompt = " ".join(row["conversations"][-1]["value"].split()[:24])
        out.append({"conversations": [{"from": "human", "value": prompt}],
                    "chosen": {"from": "gpt", "value": reply + (" Glad to help!" if signoff else "")},
                    "rejected": {"from": "gpt", "value": reply.upper() + (" Whatever." if signoff else "")}})
    path = tmp_path / f"pairs-{first}{'-signoff' if signoff else ''}.json"
    path.write_text(json.dumps(out))
    return str(path)


def train_stage(tmp_path, model_dir, stage: str, steps: int, lr: float, **over):
    signoff = stage == "rm"
    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    rec = {"name": stage, "stage": stage, "model": {"name_or_path": str(model_dir)}, "method": "lora",
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
           "data": {"train": [{"path": toy_pairs(tmp_path, 0, 48, signoff=signoff)}], "max_length": 128},
           "train": {"max_steps": steps, "batch_size": 4, "learning_rate": lr, "logging_steps": 5,
                     "warmup_ratio": 0.0, "scheduler": "constant", "save_steps": 1000},
           "output": {"runs_dir": str(tmp_path / "runs")}, **over}
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(rec))
    return train(load_recipe(path), progress_mode="plain")


def held_out(result, tmp_path, signoff: bool = False):
    """Held-out pairs (rows the run never saw) as tuneforge tokenizes them."""
    from tuneforge.runner.data import tokenize_for
    from tuneforge.runner.recipe import DataSpec

    spec = DataSpec(train=[{"path": toy_pairs(tmp_path, 200, 24, signoff=signoff)}], max_length=128, cache=False)
    return tokenize_for(spec, result.tokenizer, result.tokenizer.chat_template, 0, stage="dpo").train


def sequence_logps(model, items):
    """(sum, mean) log-prob of each chosen reply, then each rejected reply, at trained tokens."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from tuneforge.runner.stages import logps, rows

    cols = rows.pair_columns(items)
    batch = DataCollatorForPreference(pad_token_id=0)([{k: cols[k][i] for k in cols} for i in range(len(items))])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = logps.response_log_probs(logps.bare(model), batch["input_ids"], batch["attention_mask"], labels)
    total = out.log_probs.sum(1)
    return total, total / out.label_mask.sum(1)


def test_dpo_raises_the_reward_margin_on_held_out_pairs(tiny_model_dir, tmp_path):
    result = train_stage(tmp_path, tiny_model_dir, "dpo", steps=24, lr=5e-3)
    model, pairs = result.model.eval(), held_out(result, tmp_path)
    n = len(pairs)
    policy, _ = sequence_logps(model, pairs)
    with model.disable_adapter():  # the reference of reference.kind base
        ref, _ = sequence_logps(model, pairs)
    ratio = policy - ref
    margin = 0.1 * (ratio[:n] - ratio[n:])  # dpo.beta 0.1; exactly 0 before training (LoRA starts at 0)
    assert n >= 16
    assert margin.mean() > 0.2 and (margin > 0).float().mean() >= 0.65, margin


def test_simpo_raises_the_length_normalised_margin_on_held_out_pairs(tiny_model_dir, tmp_path):
    result = train_stage(tmp_path, tiny_model_dir, "simpo", steps=24, lr=5e-3)
    model, pairs = result.model.eval(), held_out(result, tmp_path)
    n = len(pairs)
    _, after = sequence_logps(model, pairs)
    with model.disable_adapter():
        _, before = sequence_logps(model, pairs)
    gain = (after[:n] - after[n:]) - (before[:n] - before[n:])
    assert gain.mean() > 0.08 and (gain > 0).float().mean() >= 0.6, gain


def test_kto_moves_desirable_and_undesirable_rewards_apart(tiny_model_dir, tmp_path):
    result = train_stage(tmp_path, tiny_model_dir, "kto", steps=24, lr=5e-3, kto={"unpair": True})
    model, pairs = result.model.eval(), held_out(result, tmp_path)
    n = len(pairs)
    policy, _ = sequence_logps(model, pairs)
    with model.disable_adapter():
        ref, _ = sequence_logps(model, pairs)
    reward = 0.1 * (policy - ref)  # KTO's implied reward, kto.beta 0.1
    desirable, undesirable = reward[:n], reward[n:]
    assert desirable.mean() > 0 > undesirable.mean()
    assert (desirable > undesirable).float().mean() >= 0.75


def test_reward_model_ranks_held_out_pairs_after_training_on_a_separable_set(tiny_model_dir, tmp_path):
    from tuneforge.runner import model as model_mod
    from tuneforge.runner.stages import rows

    result = train_stage(tmp_path, tiny_model_dir, "rm", steps=24, lr=1e-3)
    pairs = held_out(result, tmp_path, signoff=True)
    cols = rows.reward_columns(pairs)
    # load the saved run the way `tuneforge score` will: base + SEQ_CLS adapter, merged
    scorer = model_mod.merge_adapter(model_mod.resolve(str(tiny_model_dir)), result.run.path / "adapter").eval()

    def score(ids):
        with torch.no_grad():
            return scorer(input_ids=torch.tensor([ids])).logits[0, 0].item()

    accuracy = sum(score(c) > score(r) for c, r in zip(cols["chosen_ids"], cols["rejected_ids"])) / len(pairs)
    assert accuracy >= 0.8, accuracy

