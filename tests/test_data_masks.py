"""Mask exactness: for real template families the trained tokens decode to exactly each assistant
reply plus its end-of-turn marker, and input_ids equal apply_chat_template's.

Templates are fixtures written from the public model templates; SmolLM2's real tokenizer renders
them (their special tokens become plain text pieces, which is fine for comparing decoded spans).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.runner.data.formats import Mapping, RowError, convert
from tuneforge.runner.data.schema import Example, Message
from tuneforge.runner.data.template import IGNORE, ChatTokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
SYSTEM = "You are terse."
TURNS = [("What is 2+2?", "2 + 2 = 4."), ("And 3+3? Answer in a sentence.", "3 + 3 = 6, which is even.")]

# family -> (end-of-turn marker, supports a system message)
FAMILIES = {
    "smollm2": ("<|im_end|>", True),
    "llama3": ("<|eot_id|>", True),
    "mistral": ("<|im_end|>", False),  # eos_token of the tokenizer that renders it
    "gemma": ("<end_of_turn>", False),
    "phi3": ("<|end|>", True),
    "qwen3": ("<|im_end|>", True),
}
# The control tokens each family's own tokenizer keeps atomic (as in the real vocabularies), so a
# marker never merges with the text after it into one BPE piece.
CONTROL = {
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "mistral": ["[INST]", "[/INST]"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
    "phi3": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
    "qwen3": ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"],
}


@pytest.fixture(scope="module")
def base_tok(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def family_tok(smollm2_dir, family: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    if CONTROL.get(family):
        tok.add_special_tokens({"additional_special_tokens": CONTROL[family]})
    return tok


def template_of(tok, family: str) -> str:
    return tok.chat_template if family == "smollm2" else (TEMPLATES / f"{family}.jinja").read_text()


def conversation(system: bool, turns=TURNS) -> Example:
    msgs = [Message("system", SYSTEM)] if system else []
    for u, a in turns:
        msgs += [Message("user", u), Message("assistant", a)]
    return Example("conversation", msgs)


def trained_runs(tok, ids, labels) -> list[str]:
    """Decoded text of each contiguous run of trained tokens."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def reference_ids(tok, template, ex: Example) -> list[int]:
    out = tok.apply_chat_template(ex.openai_messages(), tools=ex.tools, chat_template=template, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def assert_exact(decoded: str, expected: str) -> None:
    """Exact, except that the first token may carry the whitespace that joins it to the header."""
    assert decoded.endswith(expected), (decoded, expected)
    assert decoded[: len(decoded) - len(expected)].strip() == "", (decoded, expected)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_masks_are_exactly_the_replies(smollm2_dir, family):
    tok = family_tok(smollm2_dir, family)
    eot, has_system = FAMILIES[family]
    template = template_of(tok, family)
    ex = conversation(has_system)
    chat = ChatTokenizer(tok, template, max_length=4096)
    assert chat.end_of_turn == eot
    t = chat(ex)
    assert t.input_ids == reference_ids(tok, template, ex)
    runs = trained_runs(tok, t.input_ids, t.labels)
    expected = [a + eot for _, a in TURNS]
    if family == "qwen3":  # the last reply after the last user turn is rendered with an empty think block
        expected[-1] = "<think>\n\n</think>\n\n" + expected[-1]
    assert len(runs) == len(expected)
    for got, want in zip(runs, expected):
        assert_exact(got, want)


@pytest.mark.parametrize("family", ["smollm2", "llama3", "gemma"])
def test_last_turn_only_and_train_on_prompt(smollm2_dir, family):
    tok = family_tok(smollm2_dir, family)
    eot, has_system = FAMILIES[family]
    template = template_of(tok, family)
    ex = conversation(has_system)
    last = ChatTokenizer(tok, template, 4096, last_turn_only=True)(ex)
    runs = trained_runs(tok, last.input_ids, last.labels)
    assert len(runs) == 1
    assert_exact(runs[0], TURNS[-1][1] + eot)
    every = ChatTokenizer(tok, template, 4096, train_on_prompt=True)(ex)
    assert every.input_ids == last.input_ids
    (run,) = trained_runs(tok, every.input_ids, every.labels)
    assert run == tok.decode(every.input_ids)[: len(run)]
    assert run.endswith(TURNS[-1][1] + eot) and TURNS[0][0] in run


def test_qwen3_think_blocks_of_earlier_turns_are_stripped(smollm2_dir):
    """Qwen3 drops <think> from replies before the last user turn: the mask follows the rendering."""
    tok = family_tok(smollm2_dir, "qwen3")
    template = template_of(tok, "qwen3")
    turns = [("Is 7 prime?", "<think>\n7 has no divisors but 1 and 7.\n</think>\n\nYes, 7 is prime."),
             ("And 9?", "<think>9 = 3 * 3.</think>No: 9 = 3 × 3.")]
    ex = conversation(True, turns)
    t = ChatTokenizer(tok, template, 4096)(ex)
    assert t.input_ids == reference_ids(tok, template, ex)
    text = tok.decode(t.input_ids)
    assert "7 has no divisors" not in text  # the template removed the first reasoning
    runs = trained_runs(tok, t.input_ids, t.labels)
    assert len(runs) == 2
    assert_exact(runs[0], "Yes, 7 is prime.<|im_end|>")
    assert_exact(runs[1], "<think>\n9 = 3 * 3.\n</think>\n\nNo: 9 = 3 × 3.<|im_end|>")


def test_qwen3_tool_calls_are_trained_tool_results_are_not(smollm2_dir):
    tok = family_tok(smollm2_dir, "qwen3")
    template = template_of(tok, "qwen3")
    row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp_c": 18}'},
        {"from": "gpt", "value": "It is 18 °C."},
    ], "tools": '[{"name": "get_weather", "parameters": {"type": "object"}}]'}
    ex = convert(row, Mapping("sharegpt"))
    t = ChatTokenizer(tok, template, 4096)(ex)
    assert t.input_ids == reference_ids(tok, template, ex)
    runs = trained_runs(tok, t.input_ids, t.labels)
    assert len(runs) == 2
    assert_exact(runs[0], '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>')
    assert_exact(runs[1], "<think>\n\n</think>\n\nIt is 18 °C.<|im_end|>")
    assert all("temp_c" not in r for r in runs)


def test_template_that_drops_tool_calls_is_a_reported_row_error(base_tok):
    """SmolLM2's own template ignores tool_calls: training on such a row would teach nothing, so it is refused."""
    row = {"messages": [{"role": "user", "content": "time?"},
                        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_time", "arguments": "{}"}}]},
                        {"role": "tool", "content": "14:05"}, {"role": "assistant", "content": "14:05."}]}
    ex = convert(row, Mapping("openai"))
    with pytest.raises(RowError) as err:
        ChatTokenizer(base_tok, base_tok.chat_template, 4096)(ex)
    assert "tool call" in err.value.detail


def test_preference_pair_masks_only_the_replies(smollm2_dir):
    tok = family_tok(smollm2_dir, "llama3")
    row = {"conversations": [{"from": "human", "value": "Pick a colour."}],
           "chosen": {"from": "gpt", "value": "Blue."}, "rejected": {"from": "gpt", "value": "No."}}
    ex = convert(row, Mapping("sharegpt"))
    assert ex.kind == "preference"
    t = ChatTokenizer(tok, template_of(tok, "llama3"), 4096)(ex)
    assert trained_runs(tok, t.input_ids, t.labels) == ["Blue.<|eot_id|>"]
    assert trained_runs(tok, t.rejected_ids, t.rejected_labels) == ["No.<|eot_id|>"]
    n_prompt = t.labels.index(next(x for x in t.labels if x != IGNORE))
    assert t.input_ids[:n_prompt] == t.rejected_ids[:n_prompt]


@pytest.mark.parametrize("name", ["chatml", "llama3", "alpaca", "plain"])
def test_builtin_fallback_templates(smollm2_dir, name):
    """The fallbacks for base models without a template mask exactly too."""
    from tuneforge.runner.data.template import builtin_template

    tok = family_tok(smollm2_dir, "llama3" if name == "llama3" else "smollm2")
    template = builtin_template(name)
    ex = conversation(True)
    chat = ChatTokenizer(tok, template, 4096)
    t = chat(ex)
    assert t.input_ids == reference_ids(tok, template, ex)
    eot = "<|eot_id|>" if name == "llama3" else "<|im_end|>"
    assert chat.end_of_turn == eot
    runs = trained_runs(tok, t.input_ids, t.labels)
    assert len(runs) == 2
    for got, (_, reply) in zip(runs, TURNS):
        assert_exact(got, reply + eot)


def test_template_that_does_not_render_prompts_as_prefixes(base_tok):
    """A template whose generation prompt differs from its rendering of a reply (a default system
    line only when the conversation ends in a reply) still trains just the replies."""
    template = ("{% if messages[-1]['role'] == 'assistant' %}{{ 'SYSTEM: be kind\\n' }}{% endif %}"
                "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    ex = conversation(False)
    t = ChatTokenizer(base_tok, template, 4096)(ex)
    runs = trained_runs(base_tok, t.input_ids, t.labels)
    assert [r.strip() for r in runs] == [a + "<|im_end|>" for _, a in TURNS]
