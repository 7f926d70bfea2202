"""Row-by-row validation: every reason is reported with its row, each on_bad_rows policy does what
it says, truncation policies are counted, and nothing is dropped without a line in the report."""

from __future__ import annotations

import json
import logging

import pytest

from tuneforge.runner.data import prepare
from tuneforge.runner.data import formats as F
from tuneforge.runner.errors import DataError
from tuneforge.runner.recipe import recipe_from_dict

GOOD = {"instruction": "Say hi.", "output": "Hi!"}
# (row, layout file, expected reason)
BAD_ROWS = [
    ({"instruction": "Q"}, "alpaca", F.MISSING_FIELD),
    ({"instruction": "Q", "output": "   "}, "alpaca", F.EMPTY_REPLY),
    ({"instruction": "", "input": "", "output": "A"}, "alpaca", F.EMPTY_PROMPT),
    ({"instruction": "Q", "output": 42}, "alpaca", F.NOT_TEXT),
    ({"instruction": "Q", "output": "A", "history": [["only one"]]}, "alpaca", F.BAD_SHAPE),
    ({"instruction": "Q", "chosen": "Same.", "rejected": "Same."}, "alpaca", F.SAME_PAIR),
    ({"conversations": [{"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Hi"}]}, "sharegpt", F.ORDER),
    ({"conversations": [{"from": "human", "value": "A"}, {"from": "human", "value": "B"},
                        {"from": "gpt", "value": "C"}]}, "sharegpt", F.ORDER),
    ({"conversations": [{"from": "human", "value": "A"}, {"from": "robot", "value": "C"}]}, "sharegpt", F.UNKNOWN_ROLE),
    ({"conversations": [{"from": "human", "value": "A"}, {"from": "function_call", "value": "{not json"},
                        {"from": "observation", "value": "x"}, {"from": "gpt", "value": "ok"}]}, "sharegpt", F.BAD_TOOL_CALL),
    ({"conversations": [{"from": "human", "value": "A"}, {"from": "gpt", "value": "B"}], "tools": "[oops"}, "sharegpt", F.BAD_TOOLS),
    ({"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": ["x"]}]}, "openai", F.NOT_TEXT),
    ({"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": ""}]}, "openai", F.EMPTY_REPLY),
    ({"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}], "label": "maybe"}, "openai", F.BAD_LABEL),
    ({"messages": [{"role": "user", "content": "A"}, {"role": "tool", "content": "r"},
                   {"role": "assistant", "content": "B"}]}, "openai", F.ORDER),
    ("just a string", "alpaca", F.NOT_OBJECT),
]


@pytest.mark.parametrize("row,layout,reason", BAD_ROWS, ids=[f"{r[2]}-{i}" for i, r in enumerate(BAD_ROWS)])
def test_each_reason(row, layout, reason):
    with pytest.raises(F.RowError) as err:
        F.convert(row, F.Mapping(layout))
    assert err.value.reason == reason


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def spec_for(path, **kw):
    return recipe_from_dict({"data": {"train": [{"path": str(path)}], "cache": False, **kw}}).data


def write(tmp_path, rows, name="rows.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_report_counts_reasons_and_first_rows(tmp_path, tok):
    rows = [GOOD] * 10 + [{"instruction": "Q"}, GOOD, {"instruction": "Q", "output": ""}, {"instruction": "Q"},
                          {"instruction": "Q", "output": "A " * 300}]
    p = write(tmp_path, rows)
    prep = prepare(spec_for(p, on_bad_rows="skip", max_length=64), tok, tok.chat_template, 0)
    r = prep.report
    assert r.rows == 15 and r.used == 12 and len(prep.train) == r.used
    assert r.bad_totals == {F.MISSING_FIELD: 2, F.EMPTY_REPLY: 1}
    assert [w for w, _ in r.bad[F.MISSING_FIELD]] == ["rows.jsonl line 11", "rows.jsonl line 14"]
    assert r.truncated == 1 and r.truncated_where == ["rows.jsonl line 15"]
    d = r.to_dict()
    assert d["bad"][F.MISSING_FIELD]["first"][0] == {"where": "rows.jsonl line 11", "detail": "'output' is missing"}
    assert r.rows == r.used + r.bad_count + r.dropped_long  # nothing vanishes


def test_too_long_after_truncation_is_a_bad_row(tmp_path, tok):
    p = write(tmp_path, [GOOD] * 30 + [{"instruction": "word " * 200, "output": "short"}])
    prep = prepare(spec_for(p, max_length=64), tok, tok.chat_template, 0)  # auto: 1 of 31 is under 5%
    assert prep.report.bad_totals == {F.TOO_LONG: 1}
    assert "no assistant tokens left" in prep.report.bad[F.TOO_LONG][0][1]
    assert prep.warnings and F.TOO_LONG in prep.warnings[0]


def test_policies(tmp_path, tok, caplog):
    p = write(tmp_path, [GOOD] * 19 + [{"instruction": "Q"}])  # 5% bad
    with pytest.raises(DataError) as err:
        prepare(spec_for(p, on_bad_rows="error"), tok, tok.chat_template, 0)
    assert "rows.jsonl line 20" in err.value.message and "on_bad_rows" in err.value.fix
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        prep = prepare(spec_for(p, on_bad_rows="warn"), tok, tok.chat_template, 0)
    assert len(prep.train) == 19 and "rows.jsonl line 20" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tuneforge"):
        prep = prepare(spec_for(p, on_bad_rows="skip"), tok, tok.chat_template, 0)
    assert len(prep.train) == 19 and prep.report.bad_count == 1 and not caplog.text and not prep.warnings
    assert len(prepare(spec_for(p), tok, tok.chat_template, 0).train) == 19  # auto: 5% is tolerated
    q = write(tmp_path, [GOOD] * 8 + [{"instruction": "Q"}] * 2, "many.jsonl")  # 20% bad
    with pytest.raises(DataError, match="2 of 10 rows"):
        prepare(spec_for(q), tok, tok.chat_template, 0)
    assert len(prepare(spec_for(q, max_bad_fraction=0.25), tok, tok.chat_template, 0).train) == 8
    with pytest.raises(DataError, match="no usable training rows"):
        prepare(spec_for(write(tmp_path, [{"instruction": "Q"}], "none.jsonl"), on_bad_rows="skip"), tok, tok.chat_template, 0)


def test_truncation_policies(tmp_path, tok):
    long_prompt = {"instruction": "alpha " * 100 + "THE END OF THE PROMPT", "output": "Short reply."}
    long_reply = {"instruction": "Q", "output": "beta " * 100}
    p = write(tmp_path, [GOOD, long_prompt, long_reply])

    keep_start = prepare(spec_for(p, max_length=64, shuffle=False, on_bad_rows="skip"), tok, tok.chat_template, 0)
    assert keep_start.report.truncated == 1  # the long prompt leaves nothing to learn: a bad row
    assert keep_start.report.bad_totals == {F.TOO_LONG: 1}
    assert all(len(t.input_ids) <= 64 for t in keep_start.train)
    assert tok.decode(keep_start.train[1].input_ids).startswith("<|im_start|>system")

    keep_end = prepare(spec_for(p, max_length=64, truncation="keep_end", shuffle=False, on_bad_rows="skip"),
                       tok, tok.chat_template, 0)
    assert keep_end.report.truncated == 1 and keep_end.report.bad_totals == {F.TOO_LONG: 1}  # the reply alone is too long
    t = keep_end.train[1]
    assert len(t.input_ids) == 64
    text = tok.decode(t.input_ids)
    assert text.endswith("THE END OF THE PROMPT<|im_end|>\n<|im_start|>assistant\nShort reply.<|im_end|>\n")
    assert tok.decode([x for x in t.labels if x != -100]) == "Short reply.<|im_end|>"

    drop = prepare(spec_for(p, max_length=64, truncation="drop", shuffle=False), tok, tok.chat_template, 0)
    assert len(drop.train) == 1 and drop.report.dropped_long == 2 and drop.report.bad_count == 0
    assert drop.report.dropped_where == ["rows.jsonl line 2", "rows.jsonl line 3"]
    assert "2 dropped as too long" in drop.report.summary()
