"""Offline benchmarks: a mini MMLU (and CMMLU) folder in the standard layouts, generated here, runs
through lm-eval with the tiny model; missing files and unknown tasks are clear mistakes."""

from __future__ import annotations

import pytest

from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.eval import bench

MMLU = {
    "anatomy": [("Which organ pumps blood?", "liver", "heart", "brain", "kidney", "B"),
                ("Which is a bone?", "femur", "aorta", "retina", "cortex", "A"),
                ("How many chambers has the human heart?", "1", "2", "3", "4", "D")],
    "astronomy": [("Which planet is closest to the Sun?", "Venus", "Earth", "Mercury", "Mars", "C"),
                  ("What is the Sun?", "a planet", "a star", "a moon", "a comet", "B")],
}


def mini_mmlu(root):
    import csv

    for subject, rows in MMLU.items():
        for split, part in (("dev", rows[:1]), ("test", rows)):
            (root / "mmlu" / split).mkdir(parents=True, exist_ok=True)
            with open(root / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(part)  # no header, as in hendrycks' data.tar
    (root / "cmmlu" / "test").mkdir(parents=True)
    (root / "cmmlu" / "test" / "agronomy.csv").write_text(
        ",Question,A,B,C,D,Answer\n0,水稻属于哪一类作物？,粮食作物,油料作物,纤维作物,糖料作物,A\n"
        "1,小麦的主要用途是？,做面粉,榨油,纺织,制糖,A\n", encoding="utf-8")
    (root / "ceval" / "val").mkdir(parents=True)
    (root / "ceval" / "val" / "accountant_val.csv").write_text(
        "id,question,A,B,C,D,answer\n0,会计的基本职能是？,核算和监督,预测,决策,考核,A\n", encoding="utf-8")
    return root


def test_a_local_mini_mmlu_runs_through_lm_eval_offline(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = mini_mmlu(tmp_path / "bench")
    plan = bench.plan(["mmlu", "cmmlu", "ceval"], str(root), num_fewshot=0)
    assert [t["task"] for t in plan[0].tasks] == ["tf_mmlu_anatomy", "tf_mmlu_astronomy"]
    # the prompt mirrors lm-eval's own mmlu task (its description for the subject, "Answer:")
    assert plan[0].tasks[0]["description"].startswith("The following are multiple choice questions (with answers) about anatomy")
    lm = bench.hflm(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir), 4, "cpu")
    out = bench.run(lm, plan, num_fewshot=0, limit=None)
    mmlu, cmmlu, ceval = out["mmlu"], out["cmmlu"], out["ceval"]
    assert len(mmlu["scores"]) == 5 and set(mmlu["subjects"]) == {"anatomy", "astronomy"}
    assert all(s in (0.0, 1.0) for s in mmlu["scores"])
    assert mmlu["subjects"]["anatomy"] == pytest.approx(sum(mmlu["scores"][:3]) / 3)
    assert len(cmmlu["scores"]) == 2 and set(cmmlu["subjects"]) == {"agronomy"}
    assert len(ceval["scores"]) == 1 and set(ceval["subjects"]) == {"accountant"}  # the val split is scored
    assert plan[2].tasks[0]["description"] == "以下是中国关于注册会计师的单项选择题，请选出其中的正确答案。\n\n"


def test_few_shot_needs_the_dev_file_and_the_message_says_where(tmp_path):
    root = mini_mmlu(tmp_path / "bench")
    (root / "mmlu" / "dev" / "astronomy_dev.csv").unlink()
    with pytest.raises(TuneforgeError, match="astronomy_dev.csv is missing") as err:
        bench.plan(["mmlu"], str(root), num_fewshot=5)
    assert "mmlu/dev/<subject>_dev.csv" in err.value.fix
    with pytest.raises(TuneforgeError, match="subject 'virology' has no test file"):
        bench.plan(["mmlu_virology"], str(root), num_fewshot=0)


def test_a_benchmark_not_on_disk_offline_names_the_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TuneforgeError, match="ceval.*is not on this machine") as err:
        bench.plan(["ceval"], str(tmp_path), num_fewshot=0)
    assert "ceval/val/<subject>_val.csv" in err.value.fix


def test_an_unknown_task_gets_did_you_mean():
    with pytest.raises(TuneforgeError, match="unknown benchmark task 'helaswag'") as err:
        bench.plan(["helaswag"], None, num_fewshot=0)
    assert "'hellaswag'" in err.value.fix
