"""Eval's numbers against independent computations: loss/perplexity from the model's own logits,
BLEU/ROUGE from the libraries called directly, batched generation against one-row-at-a-time
`model.generate`, and the paired bootstrap interval."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.runner.eval import items as items_mod
from tuneforge.runner.eval import metrics

ROWS = [
    {"instruction": "Say hello.", "input": "", "output": "Hello there, friend."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5"},
    {"instruction": "Name a colour of the sky.", "input": "", "output": "Blue, on a clear day, and grey when it rains a lot."},
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _write(tmp_path, rows, name="rows.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def test_loss_and_perplexity_equal_a_hand_computation_from_the_logits(tiny, tmp_path):
    import torch

    from tuneforge.runner.eval import loss

    model, tok = tiny
    data = items_mod.read_items([_write(tmp_path, ROWS), _write(tmp_path, [{"text": "Plain text, every token counts."}], "t.json")])
    chat = loss.chat_tokenizer(tok, {"max_length": 256})
    for path, its in data.items():
        rows = loss.tokenize(its, chat)
        got = loss.row_losses(model, rows, batch_size=2)
        nll, count = 0.0, 0
        for row in rows:  # one row at a time, no padding, every position's logits
            with torch.no_grad():
                logits = model(torch.tensor([row.input_ids])).logits[0, :-1].float()
            target = torch.tensor(row.labels[1:])
            keep = target != -100
            nll += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
        summary = loss.summarize(got)
        assert summary["tokens"] == count
        assert summary["loss"] == pytest.approx(nll / count, rel=1e-5)
        assert summary["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    # chat rows: only the replies count; text rows: every token (and the EOS) but the first
    chat_rows = loss.tokenize(data[next(iter(data))], chat)
    assert all(0 < sum(x != -100 for x in r.labels) < len(r.input_ids) - 1 for r in chat_rows)
    text_row = loss.tokenize(list(data.values())[1], chat)[0]
    assert sum(x != -100 for x in text_row.labels[1:]) == len(text_row.input_ids) - 1


def test_bleu_and_rouge_equal_the_libraries_own_results():
    import sacrebleu
    from rouge_score import rouge_scorer

    preds = ["the cat sat on the mat", "a quick brown fox", "hello world", "nothing in common"]
    refs = ["the cat is on the mat", "the quick brown fox jumps", "hello world", "completely different words"]
    scores = metrics.generation_scores(preds, refs)
    assert scores["bleu4"].value() == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for t in ("rouge1", "rouge2", "rougeL"):
        expected = sum(scorer.score(r, p)[t].fmeasure for p, r in zip(preds, refs)) / len(preds) * 100
        assert scores[t].value() == pytest.approx(expected)
    assert scores["exact_match"].value() == pytest.approx(25.0)


def test_chinese_is_segmented_before_rouge_and_bleu():
    import sacrebleu

    preds, refs = ["我喜欢吃苹果", "今天天气很好"], ["我喜欢吃香蕉", "今天天气很好"]
    scores = metrics.generation_scores(preds, refs)
    assert scores["bleu4"].value() == pytest.approx(sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score)
    # rouge-score alone drops Chinese characters (every score 0); with jieba words the overlap counts
    assert 50 < scores["rouge1"].value() < 100
    assert metrics.rouge(["今天天气很好"], ["今天天气很好"])["rougeL"].value() == pytest.approx(100.0)


def test_paired_interval_brackets_the_difference_and_is_zero_for_identical_scores():
    tuned = metrics.mean_scored([1, 1, 0, 1, 1, 0, 1, 1, 1, 1] * 3)
    base = metrics.mean_scored([0, 1, 0, 0, 1, 0, 0, 1, 0, 1] * 3)
    lo, hi = metrics.paired_interval(tuned, base)
    assert lo <= tuned.value() - base.value() <= hi and lo > 0
    assert metrics.paired_interval(tuned, tuned) == (0.0, 0.0)


def test_batched_left_padded_generation_equals_one_row_at_a_time(tiny, tmp_path):
    import torch

    from tuneforge.runner.eval import generate as gen

    model, tok = tiny
    its = items_mod.read_items([_write(tmp_path, ROWS)])
    prompts = [gen.prompt_ids(tok, it.prompt) for it in next(iter(its.values()))]
    assert len({len(p) for p in prompts}) > 1  # different lengths: left padding is exercised
    seen = []
    batched = gen.generate(model, tok, prompts, max_new_tokens=12, batch_size=3, on_batch=seen.extend)
    plain = []
    for p in prompts:
        out = model.generate(input_ids=torch.tensor([p]), **gen.greedy_kwargs(tok, 12))
        plain.append(tok.decode(out[0, len(p):], skip_special_tokens=True).strip())
    assert batched == plain
    assert sorted(i for i, _ in seen) == [0, 1, 2]


def test_generate_needs_reference_answers(tmp_path):
    from tuneforge.runner.errors import TuneforgeError

    data = items_mod.read_items([_write(tmp_path, [{"text": "no answer here"}], "plain.json")])
    with pytest.raises(TuneforgeError, match="without a reference answer") as err:
        items_mod.require_references(data)
    assert "--mode loss" in err.value.fix


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    from tuneforge.runner.errors import TuneforgeError
    from tuneforge.runner.eval import deps

    assert deps.missing(["loss", "generate", "bench"]) == []  # CI installs .[test,eval]
    monkeypatch.setitem(deps.NEEDS, "bench", {"tuneforge_no_such_module": "lm-eval"})
    with pytest.raises(TuneforgeError, match="need lm-eval") as err:
        deps.require(["loss", "bench"])
    assert "pip install 'tuneforge[eval]'" in err.value.fix
