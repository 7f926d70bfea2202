"""SFT, then DPO with `model.from_run`: the DPO run starts from the SFT run's merged result, records
the chain, and chat and `export --merge` rebuild exactly the weights it trained (same logits)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import shared


def run(tmp_path, name: str, **over):
    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    rec = {"name": name, "method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "data": {"max_length": 160, "truncation": "keep_end", "on_bad_rows": "skip"},
           "train": {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "warmup_ratio": 0.0, "logging_steps": 1},
           "precision": "fp32", "output": {"runs_dir": str(tmp_path / "runs")}}
    for key, value in over.items():
        rec[key] = {**rec.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(rec))
    return train(load_recipe(path), progress_mode="plain")


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """The merged from_run folders of these tiny runs go to a cache of their own, not the shared one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def chain(tiny_model_dir, tmp_path_factory, own_cache):
    tmp = tmp_path_factory.mktemp("from-run")
    sft = run(tmp, "sft", model={"name_or_path": str(tiny_model_dir)},
              data={"train": [{"path": str(shared("alpaca_en_demo.json")), "max_samples": 8}]})
    dpo = run(tmp, "dpo", stage="dpo", model={"from_run": str(sft.run.path)},
              data={"train": [{"path": str(shared("dpo_en_demo.json")), "max_samples": 8}]})
    return tmp, sft, dpo


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()


def test_dpo_from_run_records_the_chain_and_chat_loads_the_trained_weights(chain, tiny_model_dir):
    from tuneforge.runner import chat

    tmp, sft, dpo = chain
    status = json.loads(dpo.run.status.read_text())
    assert status["from_run"] == [str(sft.run.path), str(tiny_model_dir)]
    assert yaml.safe_load(dpo.run.recipe.read_text())["model"]["from_run"] == str(sft.run.path)
    ids = dpo.tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                            add_generation_prompt=True, tokenize=True, return_dict=False)
    engine = chat.load(str(dpo.run.path), device="cpu", warmup=False)
    trained = dpo.model.float().eval()
    torch.testing.assert_close(logits(engine.model.float(), ids), logits(trained, ids), rtol=1e-4, atol=1e-4)
    # without the SFT adapter merged in, the same DPO adapter gives other logits: the chain matters
    from peft import PeftModel

    from tuneforge.runner import model as model_mod

    bare = PeftModel.from_pretrained(model_mod.load_model(model_mod.resolve(str(tiny_model_dir))), str(dpo.run.path / "adapter"))
    assert not torch.allclose(logits(bare.eval(), ids), logits(trained, ids), atol=1e-4)
    assert isinstance(engine.reply([{"role": "user", "content": "Hi"}]), str)


def test_export_merge_of_a_dpo_run_from_a_run_gives_the_trained_logits(chain):
    from transformers import AutoModelForCausalLM

    from tuneforge.runner.export import export_run

    tmp, _, dpo = chain
    out = export_run(str(dpo.run.path), tmp / "merged", merge=True, dtype="fp32")
    merged = AutoModelForCausalLM.from_pretrained(out.path, dtype=torch.float32).eval()
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    torch.testing.assert_close(logits(merged, ids), logits(dpo.model.float().eval(), ids), rtol=1e-4, atol=1e-4)


def test_a_reward_run_exports_as_a_classifier_and_refuses_chat(chain, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.runner import chat
    from tuneforge.runner.errors import TuneforgeError
    from tuneforge.runner.export import export_run

    tmp, _, _ = chain
    rm = run(tmp, "rm", stage="rm", model={"name_or_path": str(tiny_model_dir)},
             data={"train": [{"path": str(shared("dpo_en_demo.json")), "max_samples": 8}]})
    with pytest.raises(TuneforgeError, match="reward model"):
        chat.load(str(rm.run.path), device="cpu", warmup=False)
    out = export_run(str(rm.run.path), tmp / "rm-merged", merge=True, dtype="fp32")
    scorer = AutoModelForSequenceClassification.from_pretrained(out.path, dtype=torch.float32).eval()
    ids = [1, 2, 3, 4, 5]
    want = rm.model.float().eval()
    with torch.no_grad():
        torch.testing.assert_close(scorer(input_ids=torch.tensor([ids])).logits,
                                   want(input_ids=torch.tensor([ids])).logits.float(), rtol=1e-4, atol=1e-4)
