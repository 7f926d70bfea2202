"""Tool formats: any template learns tool calls (call trained, result not), and the parser is the
exact inverse of the renderer, whole or streamed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.runner.data.formats import Mapping, convert
from tuneforge.runner.data.template import IGNORE, ChatTokenizer, builtin_template, resolve_chat_template
from tuneforge.runner.data.tool_format import (
    FORMATS, StreamParser, ToolCall, format_of, parse, render_call, renders_tools, with_tool_format,
)

FIXTURES = Path(__file__).parent / "fixtures"
ROW = {"conversations": [
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
    {"from": "observation", "value": '{"temp_c": 18}'},
    {"from": "gpt", "value": "It is 18 °C."},
], "system": "You are terse.", "tools": '[{"name": "get_weather", "description": "Weather now", "parameters": {"type": "object"}}]'}


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def trained_text(tok, t) -> list[str]:
    runs, cur = [], []
    for i, lab in zip(t.input_ids, t.labels):
        if lab == IGNORE:
            if cur:
                runs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    return runs + ([tok.decode(cur)] if cur else [])


def test_auto_keeps_a_template_that_renders_tools_and_wraps_one_that_cannot(tok):
    qwen3 = (FIXTURES / "templates" / "qwen3.jinja").read_text()
    assert renders_tools(qwen3, tok) and resolve_chat_template(tok, str(FIXTURES / "templates" / "qwen3.jinja"))[0] == qwen3
    assert not renders_tools(tok.chat_template, tok)
    wrapped, name = resolve_chat_template(tok, "auto")
    assert format_of(wrapped) == "json" and "tool format json" in name
    assert resolve_chat_template(tok, "auto", "template")[0] == tok.chat_template
    assert format_of(resolve_chat_template(tok, "chatml", "glm4")[0]) == "glm4"
    assert with_tool_format(wrapped, "x", "qwen")[0] == wrapped  # never wrapped twice


@pytest.mark.parametrize("base", ["smollm2", "alpaca", "llama3"])
def test_conversations_without_tools_render_exactly_as_before(tok, base):
    template = tok.chat_template if base == "smollm2" else builtin_template(base)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    for fmt in FORMATS:
        wrapped = with_tool_format(template, "t", fmt, tok)[0]
        plain = ChatTokenizer(tok, template, 512).render(msgs)
        assert ChatTokenizer(tok, wrapped, 512).render(msgs) == plain
        assert ChatTokenizer(tok, wrapped, 512).render(msgs[1:2], add_generation_prompt=True) == \
            ChatTokenizer(tok, template, 512).render(msgs[1:2], add_generation_prompt=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tool_rows_train_the_call_not_the_result_with_smollm2s_template(tok, fmt):
    template = with_tool_format(tok.chat_template, "t", fmt, tok)[0]
    ex = convert(ROW, Mapping("sharegpt"))
    t = ChatTokenizer(tok, template, 4096)(ex)
    text = tok.decode(t.input_ids)
    assert "get_weather" in text.split("<|im_end|>")[0] and "You are terse." in text  # tools in the system turn
    runs = trained_text(tok, t)
    assert runs == [render_call(ToolCall("get_weather", {"city": "Paris"}), fmt) + "<|im_end|>", "It is 18 °C.<|im_end|>"]
    assert "<tool_response>\n{\"temp_c\": 18}\n</tool_response>" in text  # the result: a user turn, not trained
    content, calls = parse(runs[0].removesuffix("<|im_end|>"), fmt, ["get_weather"])
    assert (content, calls) == ("", [ToolCall("get_weather", {"city": "Paris"})])


def test_sharegpt_tools_fixture_trains_on_the_default_template(tok):
    from tuneforge.runner.data import DataReport, load_examples, tokenize
    from tuneforge.runner.recipe import DatasetSpec

    report = DataReport()
    exs = load_examples(DatasetSpec(path=str(FIXTURES / "data" / "sharegpt_tools.json")), report)
    out = tokenize(exs, ChatTokenizer(tok, resolve_chat_template(tok)[0], 4096), report)
    assert len(out) == len(exs) == 2 and report.bad_count == 0


NAMES = st.text(st.characters(categories=["L", "N"], include_characters="_"), min_size=1, max_size=12)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)
CALLS = st.lists(st.builds(ToolCall, NAMES, st.dictionaries(st.text(max_size=8), JSONISH, max_size=4)), min_size=1, max_size=3)
CONTENT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=30).map(str.strip).filter(lambda s: "<tool_call>" not in s)


@settings(max_examples=60, deadline=None)
@given(calls=CALLS, content=CONTENT, fmt=st.sampled_from(["json", "qwen"]), cuts=st.lists(st.integers(1, 7), max_size=40))
def test_parser_inverts_the_renderer_whole_and_streamed(tok, calls, content, fmt, cuts):
    template = with_tool_format(tok.chat_template, "t", fmt, tok)[0]
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": content, "tool_calls": [
        {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}]
    chat = ChatTokenizer(tok, template, 10**6)
    prompt = chat.render(msgs[:1], add_generation_prompt=True)
    reply = chat.render(msgs)[len(prompt):].removesuffix("<|im_end|>\n")
    assert parse(reply, fmt) == (content, calls)
    sp, out, pos = StreamParser(fmt), [], 0
    for n in cuts + [len(reply)]:  # fed in arbitrary pieces
        out += sp.feed(reply[pos:pos + n])
        pos += n
    out += sp.close()
    assert "".join(x for x in out if isinstance(x, str)).strip() == content
    assert [x for x in out if isinstance(x, ToolCall)] == calls


def test_glm4_needs_a_known_tool_name_and_text_that_is_not_a_call_stays_content():
    call = ToolCall("get_time", {"tz": "UTC"})
    assert parse(render_call(call, "glm4"), "glm4", ["get_time"]) == ("", [call])
    assert parse("Hello\n{}", "glm4", ["get_time"]) == ("Hello\n{}", [])
    assert parse('<tool_call>{"nam": 1}</tool_call> hi', "json") == ('<tool_call>{"nam": 1}</tool_call> hi', [])
    sp = StreamParser("glm4", ["get_time"])
    assert sp.feed(render_call(call, "glm4")) == [] and sp.close() == [call]
