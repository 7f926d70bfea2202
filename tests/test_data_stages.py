"""Data for each training stage, with the real SmolLM2 tokenizer and real files: pairs keep their
replies whole and lose the start of the prompt, the prompt ids are an exact common prefix
(`prompt_len`), rows of the wrong kind are reported per row, KTO can unpair pairs, pre-training
text is concatenated into blocks, and data that looks valid but is not (placeholders, media) is named."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import SHARED_DATA, shared
from tuneforge.runner.data import prepare, stage_options, tokenize_for, unfilled_placeholders
from tuneforge.runner.data import formats as F
from tuneforge.runner.data.template import IGNORE, PROMPT_CUT, REPLY_CUT
from tuneforge.runner.errors import DataError
from tuneforge.runner.recipe import recipe_from_dict

END = "<|im_end|>\n<|im_start|>assistant\n"  # how SmolLM2's template ends every prompt


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def spec(train, **kw):
    train = [t if isinstance(t, dict) else {"path": str(t)} for t in train]
    return recipe_from_dict({"data": {"train": train, "cache": False, "shuffle": False, **kw}}).data


def write(tmp_path, rows, name="rows.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def trained(tok, ids, labels) -> str:
    return tok.decode([i for i, x in zip(ids, labels) if x != IGNORE])


def assert_pair(t, max_length):
    n = t.prompt_len
    assert n and t.input_ids[:n] == t.rejected_ids[:n]
    assert set(t.labels[:n]) == {IGNORE} == set(t.rejected_labels[:n])
    assert any(x != IGNORE for x in t.labels[n:]) and any(x != IGNORE for x in t.rejected_labels[n:])
    assert len(t.input_ids) <= max_length and len(t.rejected_ids) <= max_length


# ------------------------------------------------------------------------------------------
# pairs: truncation and the shared prompt


def test_dpo_demo_fits_its_default_max_length_by_cutting_prompts(tok):
    path = shared("dpo_en_demo.json")
    cut = prepare(spec([path]), tok, tok.chat_template, 0, stage="dpo")  # max_length 1024 (the default)
    whole = prepare(spec([path], max_length=8192), tok, tok.chat_template, 0, stage="dpo")
    r = cut.report
    assert (r.rows, r.used, r.bad_count) == (300, 300, 0)
    assert r.cut_totals[PROMPT_CUT] > 40 and r.truncated == r.cut_totals[PROMPT_CUT] + r.cut_totals.get(REPLY_CUT, 0)
    assert whole.report.truncated == 0
    by_row = {t.source: t for t in whole.train}
    prompt_cut = [t for t in cut.train if t.cut == PROMPT_CUT]
    for t in cut.train:
        assert_pair(t, 1024)
    for t in prompt_cut:
        full = by_row[t.source]
        # the replies are whole: the same ids after the prompt as without any cut
        assert t.input_ids[t.prompt_len:] == full.input_ids[full.prompt_len:]
        assert t.rejected_ids[t.prompt_len:] == full.rejected_ids[full.prompt_len:]
        # the prompt kept its end (the latest turn and the generation header), it lost its start
        assert t.prompt_len < full.prompt_len
        assert full.input_ids[:full.prompt_len][-t.prompt_len:] == t.input_ids[:t.prompt_len]
        assert tok.decode(t.input_ids[:t.prompt_len]).endswith(END)
        assert max(len(t.input_ids), len(t.rejected_ids)) == 1024  # as much prompt as fits
    assert "prompt cut from the left" in json.dumps(r.to_dict()["truncation"])


def test_prompt_ids_are_the_rendered_prompt_and_joint_tokenization_agrees(tok):
    """BPE boundary: the prompt is tokenized alone, each reply alone. With SmolLM2's template the
    prompt ends with '\\n', so joint tokenization of the whole text gives the same ids."""
    from tuneforge.runner.data import load_examples
    from tuneforge.runner.data.report import DataReport
    from tuneforge.runner.data.template import ChatTokenizer

    exs = load_examples(spec([shared("dpo_en_demo.json")]).train[0], DataReport())[:60]
    chat = ChatTokenizer(tok, tok.chat_template, 8192)
    for ex, t in zip(exs, chat.encode_many(exs)):
        prompt = chat.render(ex.openai_messages(), add_generation_prompt=True)
        assert tok.decode(t.input_ids[:t.prompt_len]) == prompt
        for reply, ids in ((ex.chosen, t.input_ids), (ex.rejected, t.rejected_ids)):
            full = chat.render(ex.openai_messages(reply))
            assert ids == tok(full, add_special_tokens=False)["input_ids"]


def test_replies_starting_with_spaces_or_newlines_keep_the_prompt_prefix(tok):
    from tuneforge.runner.data.schema import Example, Message
    from tuneforge.runner.data.template import ChatTokenizer

    chat = ChatTokenizer(tok, tok.chat_template, 4096)
    ex = Example("preference", [Message("user", "Say something.")], chosen=Message("assistant", "\n\n  Indented."),
                 rejected=Message("assistant", " Spaced."))
    t = chat(ex)
    assert_pair(t, 4096)
    prompt = chat.render(ex.openai_messages(), add_generation_prompt=True)
    assert tok.decode(t.input_ids[:t.prompt_len]) == prompt
    assert tok.decode(t.input_ids) == chat.render(ex.openai_messages(ex.chosen))
    assert trained(tok, t.rejected_ids, t.rejected_labels).strip() == "Spaced.<|im_end|>"
    assert trained(tok, t.input_ids, t.labels).strip() == "Indented.<|im_end|>"


def test_a_reply_too_long_to_fit_is_cut_at_its_end_beside_the_prompts_end(tmp_path, tok):
    rows = [{"instruction": "First words. " + "context " * 200 + "THE QUESTION?", "chosen": "yes " * 300, "rejected": "No."},
            {"instruction": "Q?", "chosen": "Short.", "rejected": "Also short."}]
    p = write(tmp_path, rows)
    prep = prepare(spec([p], max_length=128), tok, tok.chat_template, 0, stage="dpo")
    long, short = prep.train
    assert long.cut == REPLY_CUT and not short.truncated and short.prompt_len is not None
    assert_pair(long, 128)
    assert long.prompt_len == 128 // 8 and len(long.input_ids) == 128
    assert tok.decode(long.input_ids[:long.prompt_len]).endswith("THE QUESTION?" + END)
    assert trained(tok, long.input_ids, long.labels).startswith("yes yes")  # the reply keeps its start
    assert trained(tok, long.rejected_ids, long.rejected_labels) == "No.<|im_end|>"  # the other stays whole
    assert prep.report.cut_totals == {REPLY_CUT: 1}
    drop = prepare(spec([p], max_length=128, truncation="drop"), tok, tok.chat_template, 0, stage="dpo")
    assert len(drop.train) == 1 and drop.report.dropped_long == 1 and drop.report.dropped_where == ["rows.jsonl line 1"]


def test_feedback_rows_get_prompt_len_and_the_same_rule(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": "word " * 300 + "END?"},
                          {"role": "assistant", "content": "Fine."}], "label": True},
            {"prompt": "2+2?", "completion": "5", "label": False}]
    prep = prepare(spec([write(tmp_path, rows)], max_length=64), tok, tok.chat_template, 0, stage="kto")
    a, b = prep.train
    assert (a.label, b.label) == (True, False) and a.cut == PROMPT_CUT and len(a.input_ids) == 64
    assert tok.decode(a.input_ids[:a.prompt_len]).endswith("END?" + END)
    assert trained(tok, a.input_ids, a.labels) == "Fine.<|im_end|>" == tok.decode(a.input_ids[a.prompt_len:]).strip()
    assert trained(tok, b.input_ids, b.labels) == "5<|im_end|>"


# ------------------------------------------------------------------------------------------
# shapes of data per stage


def test_preference_shapes_alpaca_sharegpt_openai_and_trl(tmp_path, tok):
    rows = [
        {"instruction": "Capital of France?", "input": "", "chosen": "Paris.", "rejected": "Rome."},  # LLaMA-Factory alpaca
        {"conversations": [{"from": "human", "value": "Capital of France?"}],
         "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Rome."}},  # sharegpt
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},  # OpenAI/TRL, text
        {"prompt": [{"role": "user", "content": "Capital of France?"}],
         "chosen": [{"role": "assistant", "content": "Paris."}], "rejected": "Rome."},  # messages and text mixed
        {"messages": [{"role": "user", "content": "Capital of France?"}],
         "chosen": {"role": "assistant", "content": "Paris."}, "rejected": {"role": "assistant", "content": "Rome."}},
    ]
    seqs = set()
    for i, row in enumerate(rows):
        prep = prepare(spec([write(tmp_path, [row], f"r{i}.jsonl")]), tok, tok.chat_template, 0, stage="dpo")
        (t,) = prep.train
        assert prep.kind == "preference" and prep.report.bad_count == 0
        assert trained(tok, t.input_ids, t.labels) == "Paris.<|im_end|>"
        seqs.add((tuple(t.input_ids), tuple(t.rejected_ids), t.prompt_len))
    assert len(seqs) == 1  # every shape is the same pair


def test_registry_ranking_entries_and_feedback_tags(tmp_path, tok):
    prep = prepare(spec([{"dataset": "dpo_en_demo", "registry": str(SHARED_DATA / "dataset_info.json"), "max_samples": 5}],
                        max_length=4096), tok, tok.chat_template, 0, stage="dpo")
    assert prep.kind == "preference" and len(prep.train) == 5 and all(t.prompt_len for t in prep.train)
    (tmp_path / "fb.json").write_text(json.dumps([
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "label": True},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}], "label": "false"}]))
    (tmp_path / "uf.json").write_text(json.dumps([{"instruction": "Hi", "chosen": "Hello!", "rejected": "Go away."}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "kto_demo": {"file_name": "fb.json", "formatting": "sharegpt", "columns": {"messages": "messages", "kto_tag": "label"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
        "pairs": {"file_name": "uf.json", "ranking": True, "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
    }))
    kto = prepare(spec([{"dataset": "kto_demo", "registry": str(tmp_path)}]), tok, tok.chat_template, 0, stage="kto")
    assert [t.label for t in kto.train] == [True, False] and kto.kind == "feedback"
    pairs = prepare(spec([{"dataset": "pairs", "registry": str(tmp_path)}]), tok, tok.chat_template, 0, stage="rm")
    assert trained(tok, pairs.train[0].rejected_ids, pairs.train[0].rejected_labels) == "Go away.<|im_end|>"


def test_reward_margins_are_read_per_pair(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "scored.csv"
    p.write_text("instruction,chosen,rejected,gap\n" + "".join(f"Q{i}?,Good {i}.,Bad {i}.,{i / 2}\n" for i in range(20))
                 + "Q?,Good.,Bad.,lots\n")
    rec = recipe_from_dict({"stage": "rm", "rm": {"margin_column": "gap"},
                            "data": {"train": [{"path": str(p)}], "shuffle": False}})
    prep = tokenize_for(rec.data, tok, tok.chat_template, 0, "rm", **stage_options(rec))
    assert [t.margin for t in prep.train] == [i / 2 for i in range(20)]
    assert prep.report.bad[F.BAD_MARGIN] == [("scored.csv row 21", "'gap' is 'lots'")]
    again = tokenize_for(rec.data, tok, tok.chat_template, 0, "rm", **stage_options(rec))
    assert again.cache_hit and [t.margin for t in again.train] == [t.margin for t in prep.train]
    plain = tokenize_for(rec.data, tok, tok.chat_template, 0, "rm")
    assert not plain.cache_hit and plain.train[0].margin is None


def test_kto_tag_column_and_trl_prompt_completion(tmp_path):
    from tuneforge.runner.data import load_examples
    from tuneforge.runner.data.report import DataReport

    alpaca = write(tmp_path, [{"instruction": "Hi", "output": "Hello!", "kto_tag": True}], "a.jsonl")
    trl = write(tmp_path, [{"prompt": "Hi", "completion": "Go away.", "label": False}, {"prompt": "Hi", "completion": "Hello!"}])
    exs = [ex for p in (alpaca, trl) for ex in load_examples(spec([p]).train[0], DataReport())]
    assert [(e.kind, e.label) for e in exs] == [("feedback", True), ("feedback", False), ("conversation", None)]
    assert exs[2].messages[-1].content == "Hello!"


# ------------------------------------------------------------------------------------------
# rows of the wrong kind, unpaired KTO, concatenated pre-training


def test_wrong_kind_same_pair_and_empty_replies_are_reported_per_row(tmp_path, tok):
    pair = {"instruction": "Q{}?", "chosen": "Good.", "rejected": "Bad."}
    rows = [{**pair, "instruction": f"Q{i}?"} for i in range(40)]
    rows[3] = {"instruction": "Q?", "output": "A conversation row."}
    rows[7] = {"instruction": "Q?", "chosen": "Same.", "rejected": "Same."}
    rows[9] = {"instruction": "Q?", "chosen": "  ", "rejected": "Bad."}
    prep = prepare(spec([write(tmp_path, rows)], on_bad_rows="skip"), tok, tok.chat_template, 0, stage="dpo")
    r = prep.report
    assert len(prep.train) == 37 and r.bad_count == 3
    assert r.bad[F.WRONG_KIND] == [("rows.jsonl line 4", "a conversation row; stage dpo trains on preference rows")]
    assert r.bad[F.SAME_PAIR][0][0] == "rows.jsonl line 8" and r.bad[F.EMPTY_REPLY][0][0] == "rows.jsonl line 10"
    with pytest.raises(DataError, match=r"3 of 40 rows"):  # auto: 7.5% is over 5%
        prepare(spec([write(tmp_path, rows)]), tok, tok.chat_template, 0, stage="dpo")


@pytest.mark.parametrize("stage,rows,message,fix", [
    ("kto", [{"instruction": "Q", "chosen": "A", "rejected": "B"}], "stage 'kto' trains on feedback rows", "kto.unpair: true"),
    ("pt", [{"instruction": "Q", "output": "A"}], "stage 'pt' trains on text rows", '{"text": ...}'),
    ("dpo", [{"instruction": "Q", "output": "A"}], "only conversation rows", "chosen/rejected pairs"),
    ("sft", [{"instruction": "Q", "chosen": "A", "rejected": "B"}], "stage 'sft'.*preference", "kind: conversation"),
])
def test_a_dataset_of_only_wrong_rows_is_one_error_with_the_fix(tmp_path, tok, stage, rows, message, fix):
    with pytest.raises(DataError, match=message) as err:
        prepare(spec([write(tmp_path, rows * 3)]), tok, tok.chat_template, 0, stage=stage)
    assert fix in err.value.fix and "rows.jsonl line 1" in err.value.message


def test_kto_unpair_splits_each_pair(tmp_path, tok):
    p = write(tmp_path, [{"instruction": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(10)])
    rec = recipe_from_dict({"stage": "kto", "kto": {"unpair": True},
                            "data": {"train": [{"path": str(p)}], "cache": False, "shuffle": False, "eval_split": 0.2}})
    assert stage_options(rec) == {"unpair": True, "concatenate": False, "margin_column": None}
    prep = tokenize_for(rec.data, tok, tok.chat_template, 0, "kto", **stage_options(rec))
    assert prep.kind == "feedback" and prep.report.unpaired == 10 and (len(prep.train), len(prep.eval)) == (16, 4)
    first, second = prep.train[:2]
    assert (first.label, second.label) == (True, False) and first.source == "rows.jsonl line 1 (chosen)"
    assert first.input_ids[:first.prompt_len] == second.input_ids[:second.prompt_len]
    assert trained(tok, second.input_ids, second.labels) == "Bad 0.<|im_end|>"
    evals = {t.source.rsplit(" (", 1)[0] for t in prep.eval}
    assert len(evals) == 2 and not evals & {t.source.rsplit(" (", 1)[0] for t in prep.train}  # halves stay together


def test_pt_concatenates_documents_into_blocks(tok):
    path = shared("c4_demo.jsonl")
    data = spec([{"dataset": "c4_demo", "registry": str(SHARED_DATA / "dataset_info.json"), "max_samples": 40}], max_length=256)
    prep = prepare(data, tok, tok.chat_template, 0, stage="pt", concatenate=True)
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines()[:40]]
    stream = [i for d in docs for i in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    blocks = prep.train
    assert [i for b in blocks for i in b.input_ids] == stream  # nothing dropped, EOS after each document
    assert all(len(b.input_ids) == 256 for b in blocks[:-1]) and 0 < len(blocks[-1].input_ids) <= 256
    assert all(b.labels == b.input_ids for b in blocks)
    assert (prep.report.documents, prep.report.blocks, prep.report.used) == (40, len(blocks), 40)
    assert prep.report.truncated == 0 and blocks[0].source == "block 1 (from c4_demo (c4_demo.jsonl) line 1)"
    one_each = prepare(data, tok, tok.chat_template, 0, stage="pt")
    assert len(one_each.train) == 40 and one_each.report.truncated > 0  # without it: a row per document, cut
    est = tokenize_for(data, tok, tok.chat_template, 0, "pt", sample=10, concatenate=True)
    assert abs(est.total - len(blocks)) <= max(2, len(blocks) // 3)  # the estimator's block count


def test_cache_key_covers_unpair_and_concatenate_and_keeps_prompt_len(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    p = write(tmp_path, [{"instruction": f"Q{i}? " + "ctx " * 40, "chosen": f"Good {i}.", "rejected": f"Bad {i}."}
                         for i in range(6)])
    data = recipe_from_dict({"data": {"train": [{"path": str(p)}], "max_length": 32}}).data
    a = prepare(data, tok, tok.chat_template, 0, stage="dpo")
    b = prepare(data, tok, tok.chat_template, 0, stage="dpo")
    assert b.cache_hit and a.cache_key == b.cache_key and len(a.cache_key) == 32
    assert [(t.prompt_len, t.cut, t.rejected_ids) for t in a.train] == [(t.prompt_len, t.cut, t.rejected_ids) for t in b.train]
    assert b.report.cut_totals == a.report.cut_totals == {PROMPT_CUT: 6}
    kto = prepare(data, tok, tok.chat_template, 0, stage="kto", unpair=True)
    assert not kto.cache_hit and kto.cache_key != a.cache_key and len(kto.train) == 12
    off = prepare(data.model_copy(update={"cache": False}), tok, tok.chat_template, 0, stage="dpo")
    assert off.cache_key is None


# ------------------------------------------------------------------------------------------
# data that looks valid but is not


def test_unfilled_placeholders_are_named_with_the_fix(tok, caplog):
    rows = json.loads(shared("identity.json").read_text())
    assert unfilled_placeholders(rows) == {"author": 60, "name": 77}
    assert unfilled_placeholders(rows, {"name": "Forge"}) == {"author": 60}
    assert unfilled_placeholders([{"text": "{{ name }} and {not_one} and {{}}"}]) == {"name": 1}
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        prep = prepare(spec([shared("identity.json")]), tok, tok.chat_template, 0)
    r = prep.report
    assert r.placeholders == {"author": 60, "name": 77} and r.bad_count == 0
    assert "placeholders: {author: ..., name: ...} in the dataset entry" in prep.warnings[0]
    assert "{{name}} in 77 rows" in caplog.text and "{{name}}" in r.summary()
    assert r.to_dict()["placeholders"]["unfilled"] == {"author": 60, "name": 77}
    filled = prepare(spec([{"path": str(shared("identity.json")), "placeholders": {"name": "Forge", "author": "Ada"}}]),
                     tok, tok.chat_template, 0)
    assert not filled.report.placeholders and not filled.warnings


def test_media_rows_are_refused_unless_ignored(tmp_path, tok):
    rows = [{"messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat."}],
             "images": ["cat.png"]},
            {"messages": [{"role": "user", "content": "<audio>Transcribe."}, {"role": "assistant", "content": "Hi."}]},
            {"messages": [{"role": "user", "content": "Describe <video> please."}, {"role": "assistant", "content": "A dog."}]},
            ] + [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}] * 3
    p = write(tmp_path, rows)
    prep = prepare(spec([p], on_bad_rows="skip"), tok, tok.chat_template, 0)
    r = prep.report
    assert len(prep.train) == 3 and r.bad_totals == {"images are not supported yet": 1, "audio is not supported yet": 1,
                                                     "videos are not supported yet": 1}
    assert r.bad["images are not supported yet"] == [
        ("rows.jsonl line 1", "'images' holds 1 file; set data.ignore_media: true to train on the text alone")]
    let_through = prepare(spec([p], ignore_media=True), tok, tok.chat_template, 0)
    assert len(let_through.train) == 6 and let_through.report.bad_count == 0
    assert "<image>" in tok.decode(let_through.train[0].input_ids)


# ------------------------------------------------------------------------------------------
# the CLI


def test_data_check_validates_for_the_stage(run_cli, tmp_path):
    res = run_cli("data", "check", str(shared("dpo_en_demo.json")), "--stage", "dpo")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "300 rows read, 300 usable, 0 bad" in res.stdout
    n = int(res.stdout.split(" prompts cut from the left")[0].rsplit("\n", 1)[-1])
    assert n > 40 and "prompt cut from the left" in res.stdout
    kto = run_cli("data", "check", str(shared("dpo_en_demo.json")), "--stage", "kto")
    assert kto.returncode == 2 and "Traceback" not in kto.stderr
    assert "holds only preference rows" in kto.stderr and "--unpair" in kto.stderr and "or --stage dpo" in kto.stderr
    p = write(tmp_path, [{"instruction": f"Q{i}", "chosen": "A", "rejected": "B"} for i in range(30)]
              + [{"instruction": "Q", "output": "A conversation."}])
    mixed = run_cli("data", "check", str(p), "--stage", "kto", "--unpair")
    assert mixed.returncode == 0 and "30 pairs split into 60 feedback rows" in mixed.stdout
    assert "wrong kind of row for the stage" in mixed.stdout and "rows.jsonl line 31" in mixed.stdout
    assert "training would leave them out" in mixed.stdout
    strict = run_cli("data", "check", str(p), "--stage", "kto", "--unpair", "--strict")
    assert strict.returncode == 2
    ident = run_cli("data", "check", str(shared("identity.json")), "--stage", "sft")
    assert ident.returncode == 0 and "unfilled placeholders" in ident.stdout
    assert "placeholders: {author: ..., name: ...}" in ident.stdout.replace("\n", "")
    bogus = run_cli("data", "check", str(p), "--stage", "ppo")
    assert bogus.returncode == 2 and "is not a stage" in bogus.stderr


def test_data_stats_for_pt_counts_blocks(run_cli):
    res = run_cli("data", "stats", str(shared("c4_demo.jsonl")), "--stage", "pt", "--max-length", "512",
                  env={"COLUMNS": "120"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stage: pt" in res.stdout and "300 →" in res.stdout


def test_the_pair_rule_holds_for_any_lengths(tok):
    """Property: both sequences fit, the prompt keeps its end, replies keep their start, and a reply
    is cut only when it does not fit beside the prompt's last max_length/8 tokens."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tuneforge.runner.data.template import ChatTokenizer

    chat = ChatTokenizer(tok, tok.chat_template, 64)

    @settings(max_examples=300, deadline=None)
    @given(m=st.integers(16, 300), lp=st.integers(1, 400), lc=st.integers(1, 400), lr=st.integers(1, 400))
    def check(m, lp, lc, lr):
        chat.max_length = m
        prompt = list(range(1000, 1000 + lp))
        replies = [(list(range(5000, 5000 + n)), list(range(5000, 5000 + n))) for n in (lc, lr)]
        p, (c, r), cut = chat._fit(prompt, replies)
        assert len(p) + len(c[0]) <= m and len(p) + len(r[0]) <= m
        assert p == prompt[len(prompt) - len(p):] and len(p) >= 1
        assert c[0] == replies[0][0][:len(c[0])] and r[0] == replies[1][0][:len(r[0])]
        fits_whole = max(lc, lr) <= m - min(lp, m // 8)
        assert (len(c[0]), len(r[0])) == ((lc, lr) if fits_whole else (min(lc, m - min(lp, m // 8)), min(lr, m - min(lp, m // 8))))
        assert cut == ("" if lp + max(lc, lr) <= m else PROMPT_CUT if fits_whole else REPLY_CUT)
        if fits_whole:
            assert len(p) == min(lp, m - max(lc, lr))  # as much of the prompt as fits

    check()


def test_data_preview_names_unfilled_placeholders():
    from typer.testing import CliRunner

    from tuneforge.runner.cli import app

    res = CliRunner().invoke(app, ["data", "preview", str(shared("identity.json")), "-n", "2", "--plain"])
    assert res.exit_code == 0, res.output
    assert "unfilled placeholders: {{author}} in 2 rows, {{name}} in 2 rows" in res.output
