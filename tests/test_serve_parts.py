"""Serve's request rules and reply splitting, without a server: fields refused by name, the
concurrency slots, and `<think>` blocks split from the reply however the text arrives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.runner.serve import check_host, tunnel_hint
from tuneforge.runner.serve.app import Slots
from tuneforge.runner.serve.generate import _ThinkSplitter, tool_format_for
from tuneforge.runner.serve.wire import ApiError, check_fields
from tuneforge.runner.errors import TuneforgeError

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("field,value", [("n", 2), ("presence_penalty", 0.5), ("frequency_penalty", 1),
                                         ("logit_bias", {"1": 5}), ("logprobs", True), ("tool_choice", "required"),
                                         ("best_ofz", 1), ("temperature", 3), ("max_tokens", 0), ("stop", ["a"] * 5)])
def test_settings_the_server_cannot_honour_are_refused_by_name(field, value):
    with pytest.raises(ApiError) as e:
        check_fields({**CHAT, field: value}, chat=True)
    assert e.value.status == 400 and e.value.param == field and field in e.value.message
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_neutral_values_and_supported_fields_pass():
    check_fields({**CHAT, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "temperature": 0, "top_p": 0.9,
                  "stop": ["\n"], "seed": 3, "max_tokens": 8, "tools": [], "tool_choice": "auto", "user": "u",
                  "stream": True, "stream_options": {"include_usage": True}}, chat=True)
    check_fields({"model": "m", "prompt": "x", "echo": False, "best_of": 1}, chat=False)
    with pytest.raises(ApiError, match="'prompt' is required"):
        check_fields({"model": "m"}, chat=False)


def test_slots_refuse_with_429_when_full_and_free_on_give():
    s = Slots(1)
    s.take()
    with pytest.raises(ApiError) as e:
        s.take()
    assert e.value.status == 429
    s.give()
    s.take()


def test_only_loopback_goes_without_a_key():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_host(host, None)
    check_host("0.0.0.0", "key")
    with pytest.raises(TuneforgeError, match="API key"):
        check_host("0.0.0.0", None)
    assert tunnel_hint(8000).startswith("ssh -N -L 8000:127.0.0.1:8000 ")


@settings(max_examples=80, deadline=None)
@given(cuts=st.lists(st.integers(1, 9), max_size=30), lead=st.sampled_from(["", "\n", " "]))
def test_think_blocks_become_reasoning_however_the_text_is_cut(cuts, lead):
    text = lead + "<think>\nfirst, plan.\n</think>\n\nThe answer </think> is 4."
    sp, out, pos = _ThinkSplitter(True), [], 0
    for n in cuts + [len(text)]:
        out += sp.feed(text[pos:pos + n])
        pos += n
    out += sp.feed(None)
    assert "".join(t for k, t in out if k == "reasoning").strip() == "first, plan."
    assert "".join(t for k, t in out if k == "content") == "The answer </think> is 4."
    plain = _ThinkSplitter(True)
    assert "".join(t for _, t in plain.feed("No thinking") + plain.feed(None)) == "No thinking"
    assert _ThinkSplitter(False).feed("<think>x</think>y") == [("content", "<think>x</think>y")]


def test_templates_with_their_own_tools_are_parsed_as_tagged_json():
    from tuneforge.runner.data.tool_format import preamble

    assert tool_format_for("{{ messages }}") == "qwen"
    assert tool_format_for(preamble("glm4") + "{{ messages }}") == "glm4"


def test_a_prompt_after_a_tool_call_line_is_sent_as_the_tools_result():
    from tuneforge.runner.serve.client import api_messages, tool_call_line

    msgs = [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me look.\n" + tool_call_line("get_weather", '{"city": "Paris"}')},
            {"role": "user", "content": "18 C"}, {"role": "assistant", "content": "It is 18 C."},
            {"role": "user", "content": "Thanks"}]
    out = api_messages(msgs)
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "assistant", "user"]
    call = out[1]["tool_calls"][0]
    assert out[1]["content"] == "Let me look." and call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert out[2] == {"role": "tool", "tool_call_id": call["id"], "content": "18 C"}
    assert out[3:] == msgs[3:]
