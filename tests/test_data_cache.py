"""Tokenized-data cache: a second run reuses the tokens; any change to data, tokenizer, template,
max length or options is a miss; a damaged entry is a miss, never an error or stale data."""

from __future__ import annotations

import json

import pytest

from tuneforge.runner.data import cache, prepare
from tuneforge.runner.recipe import recipe_from_dict


@pytest.fixture
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch, smollm2_dir):  # after the model is resolved in the shared cache
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))


def spec(path, **kw):
    return recipe_from_dict({"data": {"train": [{"path": str(path)}], "max_length": 64, "eval_split": 0.2, **kw}}).data


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "rows.jsonl"
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(20)]
    rows.append({"instruction": "Q"})  # one bad row: its report must survive the cache too
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def entries():
    root = cache.data_cache_root()
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_hit_returns_identical_tokens_and_report(data_file, tok):
    first = prepare(spec(data_file, on_bad_rows="skip"), tok, tok.chat_template, 1)
    assert not first.cache_hit and len(entries()) == 1
    second = prepare(spec(data_file, on_bad_rows="skip"), tok, tok.chat_template, 1)
    assert second.cache_hit
    for a, b in ((first.train, second.train), (first.eval, second.eval)):
        assert [(t.input_ids, t.labels, t.truncated, t.source) for t in a] == \
               [(t.input_ids, t.labels, t.truncated, t.source) for t in b]
    assert second.report.to_dict() == first.report.to_dict()
    assert len(entries()) == 1


def test_every_input_invalidates(data_file, tok, tmp_path):
    base = prepare(spec(data_file), tok, tok.chat_template, 1)
    assert not base.cache_hit
    changes = [
        (spec(data_file, max_length=96), tok.chat_template, 1),
        (spec(data_file, train_on_prompt=True), tok.chat_template, 1),
        (spec(data_file, truncation="keep_end"), tok.chat_template, 1),
        (spec(data_file), tok.chat_template, 2),  # seed: another shuffle and split
        (spec(data_file), tok.chat_template.replace("<|im_start|>system", "<|im_start|>system "), 1),
    ]
    for s, tpl, seed in changes:
        assert not prepare(s, tok, tpl, seed).cache_hit
    assert len(entries()) == 1 + len(changes)
    tok.add_tokens(["<new_token>"])  # a different tokenizer
    assert not prepare(spec(data_file), tok, tok.chat_template, 1).cache_hit
    # the data file itself: same name, same size, one character different
    data_file.write_text(data_file.read_text().replace("Answer 3.", "Answer 8."))
    edited = prepare(spec(data_file), tok, tok.chat_template, 1)
    assert not edited.cache_hit
    assert any("Answer 8." in tok.decode(t.input_ids) for t in edited.train + edited.eval)


def test_cache_off_and_damaged_entries(data_file, tok):
    assert not prepare(spec(data_file, cache=False), tok, tok.chat_template, 1).cache_hit
    assert entries() == []
    prepare(spec(data_file), tok, tok.chat_template, 1)
    (entry,) = entries()
    (cache.data_cache_root() / entry / "tokens.npz").write_bytes(b"not a zip")
    again = prepare(spec(data_file), tok, tok.chat_template, 1)
    assert not again.cache_hit and len(again.train) == 16


def test_preference_pairs_round_trip(tmp_path, tok):
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"instruction": f"Q{i}", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}) + "\n"
                         for i in range(5)))
    s = recipe_from_dict({"data": {"train": [{"path": str(p)}], "max_length": 64}}).data
    a = prepare(s, tok, tok.chat_template, 0, stage="dpo")
    b = prepare(s, tok, tok.chat_template, 0, stage="dpo")
    assert b.cache_hit and b.kind == "preference"
    assert [(t.rejected_ids, t.rejected_labels) for t in a.train] == [(t.rejected_ids, t.rejected_labels) for t in b.train]
