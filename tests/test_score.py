"""`tuneforge score` on real reward-model runs in both of stage rm's layouts (LoRA: adapter/ with a
SEQ_CLS adapter whose modules_to_save carry the score head; full: model/ as a one-label
sequence classifier), trained by TRL 1.16's RewardTrainer on a deliberately separable toy set (kind
words chosen, rude words rejected) on a tiny Llama with the real SmolLM2 tokenizer. Also: chat
refuses a reward model and follows model.from_run for the others."""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path

import pytest

from tuneforge.runner import rundir
from tuneforge.runner.errors import TuneforgeError

pytestmark = pytest.mark.timeout(900)
GOOD = "great lovely helpful kind clear correct".split()
BAD = "awful rude wrong useless broken nasty".split()


def pairs(seed: int, n: int) -> list[dict]:
    r = random.Random(seed)
    return [{"instruction": f"Question {r.randint(0, 999)}?", "chosen": " ".join(r.choices(GOOD, k=3)),
             "rejected": " ".join(r.choices(BAD, k=3))} for _ in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def reward_run(root: Path, model_dir: Path, method: str, data: Path, steps: int, lr: float) -> rundir.RunDir:
    """A finished stage rm run: RewardTrainer on `data`, saved as stage rm saves it."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from tuneforge.runner.callbacks import RunRecorder
    from tuneforge.runner.progress import PlainProgress
    from tuneforge.runner.recipe import recipe_from_dict, recipe_to_yaml

    run = rundir.create(root / "runs", f"rm-{method}")
    recipe = recipe_from_dict({"name": run.name, "stage": "rm", "method": method, "device": "cpu",
                               "model": {"name_or_path": str(model_dir)},
                               "data": {"train": [{"path": str(data)}], "max_length": 64}})
    run.recipe.write_text(recipe_to_yaml(recipe), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    ds = Dataset.from_list([{k: [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r[k]}]
                             for k in ("chosen", "rejected")} for r in rows])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=str(run.checkpoints), max_steps=steps, logging_steps=5, per_device_train_batch_size=8,
                        report_to=[], use_cpu=True, max_length=64, save_strategy="no", learning_rate=lr,
                        disable_tqdm=True, seed=0)
    peft = LoraConfig(r=8, task_type="SEQ_CLS", target_modules="all-linear") if method == "lora" else None
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft,
                            callbacks=[RunRecorder(run, PlainProgress(io.StringIO()), time.time())])
    trainer.train()
    dest = run.adapter if method == "lora" else run.model
    trainer.save_model(str(dest))
    tok.save_pretrained(str(dest))
    run.update_status(state="finished", step=steps, total_steps=steps, ended_at=rundir.now_iso())
    return run


@pytest.fixture(scope="module")
def toy(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    train = write_jsonl(root / "train.jsonl", pairs(0, 64))
    held = write_jsonl(root / "held.jsonl", pairs(1, 12))
    return {"root": root, "train": train, "held": held,
            "lora": reward_run(root, tiny_model_dir, "lora", train, 40, 5e-3),
            "full": reward_run(root, tiny_model_dir, "full", train, 40, 1e-3)}


def test_a_reward_runs_metrics_carry_accuracy_and_margin(toy):
    from tuneforge.runner.progress import plain_line

    recs = [r for r in toy["lora"].read_metrics() if r.get("loss") is not None]
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(isinstance(r["accuracy"], float) and isinstance(r["margin"], float) for r in recs)
    assert recs[-1]["margin"] > recs[0]["margin"]
    assert f"| acc {recs[-1]['accuracy']:.0%} | margin {recs[-1]['margin']:+.3f} |" in plain_line(recs[-1])


def test_score_cli_on_the_lora_layout_prints_rows_and_accuracy(toy, run_cli):
    run = toy["lora"]
    assert (run.adapter / "adapter_config.json").is_file() and not run.model.exists()
    res = run_cli("score", str(run.path), "--data", str(toy["held"]), timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["row", "chosen", "rejected", "margin"]
    assert [ln.split()[:3] for ln in lines[1:13]] == [["held.jsonl", "line", str(i)] for i in range(1, 13)]
    import re

    acc = re.fullmatch(r"pairwise accuracy ([\d.]+)% \((\d+) of 12 pairs\), mean margin \+[\d.]+", lines[-1])
    assert acc and float(acc[1]) >= 80 and float(acc[1]) == pytest.approx(int(acc[2]) / 12 * 100, abs=0.05), lines[-1]
    assert sum(not ln.endswith("✗") for ln in lines[1:13]) == int(acc[2])  # a wrongly ordered pair is marked

    res = run_cli("score", run.name, "--runs-dir", str(run.path.parent), "--data", str(toy["held"]), "--limit", "3",
                  "--json", timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["pairs"] == 3 and [r["row"] for r in out["rows"]] == [f"held.jsonl line {i}" for i in (1, 2, 3)]
    for r in out["rows"]:
        assert r["margin"] == pytest.approx(r["chosen"] - r["rejected"])
    assert out["accuracy"] == sum(r["margin"] > 0 for r in out["rows"]) / 3 and out["skipped"] == []


def test_the_full_layout_scores_held_out_pairs_and_flipped_pairs_flip(toy):
    from tuneforge.runner import services

    run = toy["full"]
    assert (run.model / "config.json").is_file() and not run.adapter.exists()
    report = services.score(run.path, toy["held"])
    assert report.accuracy == 1.0 and report.mean_margin > 1.0
    # the same pairs the wrong way round: every one scored as wrong, margins negated
    flipped = write_jsonl(toy["root"] / "flipped.jsonl",
                          [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in pairs(1, 12)])
    back = services.score(run.path, flipped)
    assert back.accuracy == 0.0
    assert [p.margin for p in back.pairs] == pytest.approx([-p.margin for p in report.pairs], abs=1e-4)


def test_rows_that_are_not_pairs_are_listed_with_their_row_number(toy):
    from tuneforge.runner import services

    rows = pairs(2, 2)
    too_long = {"instruction": "word " * 200, "chosen": "a", "rejected": "b"}  # the run's max_length is 64
    mixed = write_jsonl(toy["root"] / "mixed.jsonl", [rows[0], {"instruction": "Hi", "output": "Hello"},
                                                      {"instruction": "x", "chosen": "a"}, rows[1], too_long])
    report = services.score(toy["lora"].path, mixed)
    scored, skipped = [p.row for p in report.pairs], [row for row, _ in report.skipped]
    assert sorted(scored + skipped) == [f"mixed.jsonl line {i}" for i in range(1, 6)]  # every row once
    assert scored[:2] == ["mixed.jsonl line 1", "mixed.jsonl line 4"] and skipped[:2] == ["mixed.jsonl line 2", "mixed.jsonl line 3"]
    reasons = dict(report.skipped)
    assert "not a chosen/rejected pair" in reasons["mixed.jsonl line 2"]
    # a prompt longer than the run's max_length: skipped with the reason, or scored with the prompt cut
    # from the left (the data layer's pair truncation rule), never both
    assert "max_length 64" in reasons.get("mixed.jsonl line 5", "max_length 64")
    assert any(line.startswith("skipped mixed.jsonl line 2:") for line in report.lines())


def test_score_errors_exit_2_with_the_fix(toy, tiny_model_dir, run_cli, tmp_path):
    convs = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "Hi", "output": "Hello"}] * 3)
    res = run_cli("score", str(toy["lora"].path), "--data", str(convs), timeout=600)
    assert res.returncode == 2 and "holds no preference pairs" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr

    sft = rundir.create(tmp_path / "runs", "an-sft-run")
    sft.recipe.write_text(toy["lora"].recipe.read_text().replace("stage: rm", "stage: sft"), encoding="utf-8")
    res = run_cli("score", str(sft.path), "--data", str(toy["held"]), timeout=120)
    assert res.returncode == 2 and "not a reward model" in res.stderr and "tuneforge chat" in res.stderr

    res = run_cli("score", "no-such-run", "--data", str(toy["held"]), timeout=120)
    assert res.returncode == 2 and "no run called 'no-such-run'" in res.stderr

    res = run_cli("score", str(toy["lora"].path), "--data", str(tmp_path / "missing.jsonl"), timeout=120)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_chat_refuses_a_reward_model_and_points_to_score(toy, run_cli):
    from tuneforge.runner import chat

    with pytest.raises(TuneforgeError, match="reward model") as err:
        chat.resolve_target(str(toy["lora"].path))
    assert "tuneforge score" in err.value.fix
    res = run_cli("chat", str(toy["full"].path), "--plain", input="Hi\n", timeout=120)
    assert res.returncode == 2 and "it scores replies, it does not chat" in res.stderr
    assert f"tuneforge score {toy['full'].path} --data FILE" in res.stderr


def test_chat_on_a_run_from_an_earlier_run_stacks_both_adapters(tiny_model_dir, tmp_path):
    """model.from_run: the earlier run's adapter is merged into the base, then this run's goes on top."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tuneforge.runner import chat

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def adapter_run(name: str, seed: int, **model_spec) -> rundir.RunDir:
        run = rundir.create(tmp_path / "runs", name)
        torch.manual_seed(seed)
        peft = get_peft_model(LlamaForCausalLM.from_pretrained(tiny_model_dir),
                              LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft.save_pretrained(str(run.adapter))
        tok.save_pretrained(str(run.adapter))
        spec = {"name_or_path": str(tiny_model_dir), **model_spec}
        run.recipe.write_text(json.dumps({"name": name, "stage": "dpo" if model_spec else "sft", "model": spec}),
                              encoding="utf-8")
        return run

    sft = adapter_run("sft", 1)
    dpo = adapter_run("dpo", 2, from_run=str(sft.path))
    engine = chat.load(str(dpo.path), device="cpu", warmup=False)
    ids = torch.tensor([tok("Hello there")["input_ids"]])
    from peft import PeftModel

    expected = PeftModel.from_pretrained(
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_model_dir), str(sft.adapter)).merge_and_unload(),
        str(dpo.adapter)).eval()
    only_dpo = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_model_dir), str(dpo.adapter)).eval()
    with torch.no_grad():
        got, want, wrong = (m(ids).logits for m in (engine.model, expected, only_dpo))
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, wrong, atol=1e-3)


def test_a_reward_model_trained_on_an_earlier_run_scores_on_top_of_it(tiny_model_dir, tmp_path):
    """rm with model.from_run: the earlier run's adapter merged under the score head, then this run's adapter."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

    from tuneforge.runner.score import load_reward_model, reward_run

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sft = rundir.create(tmp_path / "runs", "sft")
    torch.manual_seed(1)
    get_peft_model(LlamaForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(str(sft.adapter))
    tok.save_pretrained(str(sft.adapter))  # as every run saves its tokenizer with its weights
    sft.recipe.write_text(json.dumps({"name": "sft", "model": {"name_or_path": str(tiny_model_dir)}}), encoding="utf-8")

    merged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_model_dir), str(sft.adapter)).merge_and_unload()
    scorer = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    scorer.config.pad_token_id = tok.pad_token_id
    scorer.model.load_state_dict(merged.model.state_dict())
    torch.manual_seed(2)
    expected = get_peft_model(scorer, LoraConfig(r=4, task_type="SEQ_CLS", target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False)).eval()
    rm = rundir.create(tmp_path / "runs", "rm")
    expected.save_pretrained(str(rm.adapter))
    tok.save_pretrained(str(rm.adapter))
    spec = {"name": "rm", "stage": "rm", "method": "lora", "data": {"train": [{"path": "pairs.jsonl"}]},
            "model": {"name_or_path": str(tiny_model_dir), "from_run": str(sft.path)}}
    rm.recipe.write_text(json.dumps(spec), encoding="utf-8")

    model, _ = load_reward_model(rm, reward_run(rm))
    ids = torch.tensor([tok("Is this kind? yes")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected(input_ids=ids).logits, atol=1e-5)
        del spec["model"]["from_run"]
        rm.recipe.write_text(json.dumps(spec), encoding="utf-8")
        alone, _ = load_reward_model(rm, reward_run(rm))  # the same adapter on the bare base: another score
        assert not torch.allclose(alone(input_ids=ids).logits, expected(input_ids=ids).logits, atol=1e-3)
