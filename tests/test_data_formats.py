"""Every format and source converts into the one schema: the shared data sets, LLaMA-Factory's
registry, sharegpt with tools, OpenAI tool calls, csv/parquet/txt/folders, mixing and splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SHARED_DATA, shared
from tuneforge.runner.data import DataReport, load_examples, mix, prepare
from tuneforge.runner.errors import DataError
from tuneforge.runner.recipe import DatasetSpec, recipe_from_dict

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def examples(**spec):
    report = DataReport()
    return load_examples(DatasetSpec(**spec), report), report


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def data_spec(train, **kw):
    return recipe_from_dict({"data": {"train": train, "cache": False, **kw}}).data


def test_alpaca_en_and_zh(tmp_path):
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        exs, rep = examples(path=str(shared(name)))
        assert rep.bad_count == 0 and len(exs) == rep.rows > 900
        ex = exs[0]
        assert ex.kind == "conversation" and [m.role for m in ex.messages] == ["user", "assistant"]
        row = json.loads(shared(name).read_text())[0]
        assert ex.messages[0].content.startswith(row["instruction"]) and ex.messages[1].content == row["output"]
        assert ex.source == f"{name} row 1"


def test_alpaca_system_and_history(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"instruction": "Q2", "input": "ctx", "output": "A2", "system": "Be brief.",
                              "history": [["Q1", "A1"]]}]))
    (ex,), _ = examples(path=str(p))
    assert [(m.role, m.content) for m in ex.messages] == [
        ("system", "Be brief."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2\nctx"), ("assistant", "A2")]


def test_identity_placeholders():
    exs, _ = examples(path=str(shared("identity.json")), placeholders={"name": "Forge", "author": "Ada"})
    assert "I am Forge, an AI assistant developed by Ada" in exs[2].messages[-1].content
    assert not any("{{" in m.content for ex in exs for m in ex.messages)


def test_dpo_preference_pairs():
    exs, rep = examples(path=str(shared("dpo_en_demo.json")))
    assert rep.bad_count == 0 and len(exs) == 300
    ex = exs[0]
    assert ex.kind == "preference" and ex.messages[-1].role == "user"
    assert ex.chosen.role == ex.rejected.role == "assistant" and ex.chosen.content != ex.rejected.content


def test_preference_in_alpaca_form_and_feedback(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"instruction": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}) + "\n")
    (ex,), _ = examples(path=str(p))
    assert ex.kind == "preference" and ex.chosen.content == "Paris." and ex.messages[-1].content == "Capital of France?"
    k = tmp_path / "kto.json"
    k.write_text(json.dumps([
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "label": True},
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}], "label": False}]))
    exs, _ = examples(path=str(k))
    assert [(e.kind, e.label) for e in exs] == [("feedback", True), ("feedback", False)]


def test_text_jsonl_and_txt(tmp_path):
    exs, _ = examples(path=str(shared("c4_demo.jsonl")))
    assert exs[0].kind == "text" and exs[0].source == "c4_demo.jsonl line 1" and len(exs) == 300
    t = tmp_path / "notes.txt"
    t.write_text("first document\n\nsecond document\n")
    exs, _ = examples(path=str(t))
    assert [(e.kind, e.text, e.source) for e in exs] == [("text", "first document", "notes.txt line 1"),
                                                         ("text", "second document", "notes.txt line 3")]


def test_sharegpt_with_tools_fixture():
    exs, rep = examples(path=str(FIXTURES / "sharegpt_tools.json"))
    assert rep.bad_count == 0
    ex = exs[0]
    assert [m.role for m in ex.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert ex.messages[2].tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert ex.tools[0]["name"] == "get_weather"


def test_openai_tool_calls_fixture():
    exs, rep = examples(path=str(FIXTURES / "openai_tools.jsonl"))
    assert rep.bad_count == 0 and len(exs) == 2
    call = exs[0].messages[2]
    assert call.role == "assistant" and call.tool_calls == [{"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}]
    assert exs[0].messages[3].role == "tool" and exs[0].tools[0]["function"]["name"] == "get_time"


def test_column_and_tag_mapping(tmp_path):
    p = tmp_path / "qa.csv"
    p.write_text("question,answer\nWhat is 1+1?,2\n")
    (ex,), _ = examples(path=str(p), columns={"prompt": "question", "response": "answer"})
    assert [(m.role, m.content) for m in ex.messages] == [("user", "What is 1+1?"), ("assistant", "2")]
    q = tmp_path / "chat.json"
    q.write_text(json.dumps([{"dialog": [{"speaker": "me", "text": "hi"}, {"speaker": "bot", "text": "hello"}]}]))
    (ex,), _ = examples(path=str(q), format="sharegpt", columns={"messages": "dialog"},
                        tags={"role_tag": "speaker", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot"})
    assert [(m.role, m.content) for m in ex.messages] == [("user", "hi"), ("assistant", "hello")]


def test_parquet_and_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"instruction": [f"q{i}"], "output": [f"a{i}"]}), folder / f"part{i}.parquet")
    exs, _ = examples(path=str(folder))
    assert [e.messages[1].content for e in exs] == ["a0", "a1"] and exs[1].source == "parts/ part1.parquet row 1"
    (folder / "x.json").write_text("[]")
    with pytest.raises(DataError, match="mixes file types"):
        examples(path=str(folder))


def test_registry_entries_by_name():
    reg = str(SHARED_DATA / "dataset_info.json")
    shared("dataset_info.json")
    exs, _ = examples(dataset="alpaca_en_demo", registry=reg)
    assert len(exs) > 900 and exs[0].source.startswith("alpaca_en_demo (alpaca_en_demo.json)")
    exs, _ = examples(dataset="dpo_en_demo", registry=str(SHARED_DATA))
    assert exs[0].kind == "preference"
    exs, _ = examples(dataset="c4_demo", registry=reg)
    assert exs[0].kind == "text"
    with pytest.raises(DataError, match="glaive_toolcall_en_demo.*does not exist"):
        examples(dataset="glaive_toolcall_en_demo", registry=reg)
    with pytest.raises(DataError, match="'alpaca_en'.*hub.*offline") as err:
        examples(dataset="alpaca_en", registry=reg)
    assert "path" in err.value.fix
    with pytest.raises(DataError) as err:
        examples(dataset="identiy", registry=reg)
    assert "identity" in err.value.fix


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(DataError, match="hub dataset 'someone/data'.*offline"):
        examples(path="hf:someone/data")


def test_unreadable_files_name_the_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match="bad.jsonl line 2"):
        examples(path=str(bad))
    with pytest.raises(DataError, match="does not exist"):
        examples(path=str(tmp_path / "missing.json"))
    odd = tmp_path / "rows.json"
    odd.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(DataError, match="cannot tell the format"):
        examples(path=str(odd))


ROW = {"instruction": "Q", "output": "A"}
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("name, content", [
    ("bom.json", BOM + json.dumps([ROW]).encode()),
    ("bom.jsonl", BOM + (json.dumps(ROW) + "\n").encode() * 2),
    ("bom.csv", BOM + b"instruction,output\r\nQ,A\r\n"),
    ("bom.txt", BOM + b"some text\r\n"),
])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    exs, rep = examples(path=str(p))
    assert rep.bad_count == 0 and exs
    if name.endswith(".txt"):
        assert exs[0].text == "some text"
    else:
        assert [m.content for m in exs[0].messages] == ["Q", "A"]


@pytest.mark.parametrize("name, content, message", [
    ("rows.jsonl", (json.dumps(ROW) + "\n").encode() * 2 + b'{"instruction": "caf\xe9", "output": "A"}\n',
     "rows.jsonl line 3 is not UTF-8 text (byte 0xe9 at column 21)"),
    ("rows.json", b'[{"instruction": "Q",\n "output": "\xff"}]', "rows.json line 2 is not UTF-8 text (byte 0xff"),
    ("rows.csv", b"instruction,output\nQ,A\nQ,\x80\n", "rows.csv line 3 is not UTF-8 text (byte 0x80"),
    ("rows.txt", b"fine\n\xc3\n", "rows.txt line 2 is not UTF-8 text"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "deep.json is nested too deeply"),
    ("deep.jsonl", (json.dumps(ROW) + "\n").encode() + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
     "deep.jsonl line 2 is nested too deeply"),
    ("wide.csv", b"instruction,output\nQ,A\nQ, yes, really,A\n", "wide.csv row 2 (line 3) has 4 fields but the header has 2"),
    ("huge.csv", b"instruction,output\nQ,A\nQ," + b"x" * 200_000 + b"\n", "huge.csv row 2 is not valid CSV: field larger"),
    ("empty.jsonl", b"\n\n", "empty.jsonl holds no rows"),
    ("ints.json", b"[1, 2, 3]", "cannot tell the format of ints.json: its rows are ints, not objects (row 1)"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "")
def test_bad_bytes_and_shapes_name_the_file_and_line(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError) as exc:
        examples(path=str(p))
    assert message in exc.value.message, exc.value.message


@pytest.mark.parametrize("entry, message", [
    ({"file_name": 3}, "'file_name' must be text"),
    ({"file_name": "a.json", "columns": ["prompt"]}, "'columns' must map names to column names"),
    ({"file_name": "a.json", "formatting": ["alpaca"]}, "'formatting' must be text"),
])
def test_registry_entries_of_the_wrong_shape_are_named(tmp_path, entry, message):
    (tmp_path / "a.json").write_text(json.dumps([ROW]))
    (tmp_path / "dataset_info.json").write_bytes(BOM + json.dumps({"mine": entry}).encode())
    with pytest.raises(DataError, match=f"dataset 'mine' in .*dataset_info.json: {message}"):
        examples(dataset="mine", registry=str(tmp_path))


def test_registry_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "dataset_info.json").write_bytes(b'{\n "mine": {"file_name": "\xe9.json"}}')
    with pytest.raises(DataError, match="registry dataset_info.json line 2 is not UTF-8"):
        examples(dataset="mine", registry=str(tmp_path))


def test_interleave_by_weight_and_concat(tmp_path):
    from tuneforge.runner.data.schema import Example

    a = [Example("text", text=f"a{i}") for i in range(100)]
    b = [Example("text", text=f"b{i}") for i in range(30)]
    assert len(mix([a, b], [1, 1], "concat", 0)) == 130
    mixed = mix([a, b], [3, 1], "interleave", 0)
    n_a = sum(e.text.startswith("a") for e in mixed)
    assert (n_a, len(mixed) - n_a) == (90, 30)
    assert mixed == mix([a, b], [3, 1], "interleave", 0)  # seeded
    assert [e.text for e in mixed[:20]] != [e.text for e in (a + b)[:20]]  # interleaved, not stacked


def test_prepare_split_shuffle_and_max_samples(tok):
    path = str(shared("alpaca_en_demo.json"))
    spec = data_spec([{"path": path, "max_samples": 200}], max_length=128, eval_split=0.1)
    p = prepare(spec, tok, tok.chat_template, seed=3)
    assert (len(p.train), len(p.eval)) == (180, 20) and p.report.rows == 200
    again = prepare(spec, tok, tok.chat_template, seed=3)
    assert [t.input_ids for t in again.train] == [t.input_ids for t in p.train]
    other = prepare(spec, tok, tok.chat_template, seed=4)
    assert [t.input_ids for t in other.train] != [t.input_ids for t in p.train]
    sep = data_spec([{"path": path, "max_samples": 50}], eval=[{"path": str(FIXTURES / "openai_tools.jsonl")}],
                    max_samples=30, max_length=128, on_bad_rows="skip")
    p = prepare(sep, tok, tok.chat_template, seed=0)
    assert len(p.train) == 30 and len(p.eval) == 1  # the tool-call row is bad for SmolLM2's template
    assert p.report.bad_count == 1


def test_preference_rows_refused_for_sft(tok):
    with pytest.raises(DataError, match="stage 'sft'.*preference"):
        prepare(data_spec([{"path": str(shared("dpo_en_demo.json")), "max_samples": 5}]), tok, tok.chat_template, 0)
    p = prepare(data_spec([{"path": str(shared("dpo_en_demo.json")), "max_samples": 5}], max_length=4096),
                tok, tok.chat_template, 0, stage="dpo")
    assert p.kind == "preference" and all(t.rejected_ids for t in p.train)


def test_quickstart_recipe_still_loads_and_prepares(tok):
    from tuneforge.runner.recipe import load_recipe

    rec = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml", ["data.cache=false"])
    p = prepare(rec.data, tok, tok.chat_template, rec.seed)
    assert p.report.bad_count == 0 and len(p.train) > 10


def test_preference_data_as_conversation_trains_on_chosen():
    exs, rep = examples(path=str(shared("dpo_en_demo.json")), kind="conversation", max_samples=3)
    raw = json.loads(shared("dpo_en_demo.json").read_text())[0]
    assert rep.bad_count == 0 and exs[0].kind == "conversation"
    assert exs[0].messages[-1].role == "assistant" and exs[0].messages[-1].content == raw["chosen"]["value"]


def test_trl_style_conversational_preference_and_feedback(tmp_path):
    p = tmp_path / "trl.jsonl"
    rows = [
        {"prompt": [{"role": "user", "content": "Sky colour?"}],
         "chosen": [{"role": "assistant", "content": "Blue."}], "rejected": [{"role": "assistant", "content": "Green."}]},
        {"prompt": [{"role": "user", "content": "Sky colour?"}],
         "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pref, fb), rep = examples(path=str(p))
    assert rep.bad_count == 0
    assert pref.kind == "preference" and (pref.chosen.content, pref.rejected.content) == ("Blue.", "Green.")
    assert fb.kind == "feedback" and fb.label is True and fb.messages[-1].content == "Blue."
