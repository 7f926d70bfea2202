"""The chat engine and conversation: the run's own template, compare = adapter off, stop, stats, /save."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from chat_helpers import tiny_lora_run
from tuneforge.runner import chat
from tuneforge.runner.chat_session import BASE, TUNED, Conversation, parse_command, parse_settings
from tuneforge.runner.errors import TuneforgeError


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir):
    return tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


@pytest.fixture(scope="session")
def engine(tiny_run):
    return chat.load(str(tiny_run), device="cpu")


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Forge."},
    {"role": "user", "content": "And what do you do?"},
    {"role": "assistant", "content": "I answer questions about the forge."},
]


def test_chat_prompt_is_exactly_what_training_put_before_the_reply(engine, tiny_run, tiny_model_dir):
    from transformers import AutoTokenizer

    from tuneforge.runner.data.schema import Example, Message
    from tuneforge.runner.data.template import IGNORE, ChatTokenizer, builtin_template, resolve_chat_template

    base_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # the run's (alpaca, with its tool format), not the base's
    assert engine.chat_template == resolve_chat_template(base_tok, "alpaca")[0] != base_tok.chat_template
    training = ChatTokenizer(base_tok, builtin_template("alpaca"), max_length=512)
    tokenized = training(Example("conversation", [Message(m["role"], m["content"]) for m in CONVERSATION]))
    prompt = engine.prompt_ids(CONVERSATION[:-1])
    # Token for token, the chat prompt is the training sequence up to the last reply, and the
    # trained (labelled) tokens of that reply start right where the chat prompt ends.
    assert tokenized.input_ids[: len(prompt)] == prompt
    assert tokenized.labels[len(prompt) - 1] == IGNORE and tokenized.labels[len(prompt)] != IGNORE
    assert engine.tokenizer.decode(prompt).endswith("### Response:\n")


def test_model_with_an_adapter_folder_uses_the_adapters_template(engine, tiny_run, tiny_model_dir):
    eng = chat.load(str(tiny_model_dir), adapter=str(tiny_run / "adapter"), device="cpu", warmup=False)
    assert eng.chat_template == engine.chat_template  # alpaca, saved with the adapter
    messages = [{"role": "user", "content": "Who are you?"}]
    assert eng.prompt_ids(messages) == engine.prompt_ids(messages)
    assert eng.reply(messages, chat.Sampling(max_new_tokens=8)) == engine.reply(messages, chat.Sampling(max_new_tokens=8))


def test_model_without_template_chats_with_the_training_fallback(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.runner.data.template import resolve_chat_template

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = AutoTokenizer.from_pretrained(bare)
    assert not tok.chat_template
    eng = chat.load(str(bare), device="cpu", warmup=False)
    expected, name = resolve_chat_template(tok, "auto")
    assert "fallback" in name and eng.chat_template == expected
    assert eng.tokenizer.decode(eng.prompt_ids([{"role": "user", "content": "Hi"}])) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_compare_base_is_the_model_without_its_adapter(engine, tiny_model_dir):
    from tuneforge.runner import model as model_mod

    messages = [{"role": "user", "content": "Who are you?"}]
    sampling = chat.Sampling(max_new_tokens=12)
    tuned = engine.reply(messages, sampling)
    base = engine.base()
    assert base.lock is engine.lock  # one model, one generation at a time
    plain = model_mod.load_model(model_mod.resolve(str(tiny_model_dir))).eval()
    reference = chat.ChatModel(plain, engine.tokenizer, "reference")
    assert base.reply(messages, sampling) == reference.reply(messages, sampling)
    assert tuned != reference.reply(messages, sampling)  # the fine-tune changed the answer
    assert engine.reply(messages, sampling) == tuned  # the adapter is back on after the base answered


def test_base_and_tuned_from_two_threads_do_not_mix(engine):
    messages = [{"role": "user", "content": "Hello there"}]
    sampling = chat.Sampling(max_new_tokens=16)
    expected = {TUNED: engine.reply(messages, sampling), BASE: engine.base().reply(messages, sampling)}
    got: dict[str, list[str]] = {TUNED: [], BASE: []}

    def talk(variant):
        model = engine if variant == TUNED else engine.base()
        for _ in range(3):
            got[variant].append(model.reply(messages, sampling))

    threads = [threading.Thread(target=talk, args=(v,)) for v in (TUNED, BASE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == {v: [expected[v]] * 3 for v in (TUNED, BASE)}


def test_stop_keeps_the_partial_reply_and_stats_are_measured(engine):
    stop = threading.Event()
    pieces = []
    for piece in engine.stream([{"role": "user", "content": "Tell me a long story"}], chat.Sampling(max_new_tokens=1000), stop):
        pieces.append(piece)
        if len(pieces) == 3:
            stop.set()
    stats = engine.last_stats
    assert stats.stopped and 3 <= stats.new_tokens < 1000
    assert "".join(pieces).strip()
    assert stats.ttft_s is not None and 0 < stats.ttft_s <= stats.total_s
    assert stats.tokens_per_s and stats.tokens_per_s > 0
    assert "to first token" in stats.describe() and "stopped" in stats.describe()


def test_sampling_settings_are_checked():
    s = chat.Sampling()
    for name, value in parse_settings("temperature=0.7 top_p 0.9 top_k=40 max_new_tokens=64 repetition_penalty=1.1"):
        s.set(name, value)
    assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.repetition_penalty) == (0.7, 0.9, 40, 64, 1.1)
    with pytest.raises(TuneforgeError, match="unknown setting 'temprature'") as e:
        s.set("temprature", "1")
    assert "did you mean 'temperature'" in e.value.fix
    with pytest.raises(TuneforgeError, match="out of range"):
        s.set("top_p", "1.5")
    with pytest.raises(TuneforgeError, match="whole number"):
        s.set("max_new_tokens", "lots")
    with pytest.raises(TuneforgeError, match="name=value"):
        parse_settings("temperature")


def test_slash_commands_are_only_known_ones():
    assert parse_command("/save chats.jsonl").arg == "chats.jsonl"
    assert parse_command("/RETRY").name == "/retry"
    assert parse_command("/etc/hosts is a file?") is None  # a prompt, not a command
    assert parse_command("hello /retry") is None


def test_saved_conversation_is_training_data(tmp_path):
    from tuneforge.runner.data import DataReport, load_examples
    from tuneforge.runner.recipe import DatasetSpec

    conv = Conversation(system="Be kind.")
    with pytest.raises(TuneforgeError, match="nothing to save"):
        conv.save(tmp_path / "c.jsonl")
    conv.add("Who are you?").replies.update({TUNED: "I am Forge.", BASE: "I am SmolLM."})
    conv.add("Thanks!")  # not answered yet: left out of the row
    out = conv.save(tmp_path / "sub" / "c.jsonl")
    conv.save(out, BASE)
    report = DataReport()
    examples = load_examples(DatasetSpec(path=str(out), format="openai"), report)
    assert report.bad_count == 0 and len(examples) == 2
    assert [(m.role, m.content) for m in examples[0].messages] == [
        ("system", "Be kind."), ("user", "Who are you?"), ("assistant", "I am Forge.")]
    assert examples[1].messages[-1].content == "I am SmolLM."
    with pytest.raises(TuneforgeError, match=".jsonl"):
        conv.save(tmp_path / "c.txt")


def test_run_without_weights_is_refused_before_loading(tmp_path):
    run = tmp_path / "half"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: half\n")
    (run / "status.json").write_text('{"state": "running"}')
    with pytest.raises(TuneforgeError, match="no final weights yet") as e:
        chat.resolve_target(str(run))
    assert "tuneforge chat" in e.value.fix
    with pytest.raises(TuneforgeError, match="no final weights yet"):
        chat.resolve_target("half", runs_dir=str(tmp_path))  # found by name under runs_dir
    assert chat.resolve_target("smollm2-135m", runs_dir=str(tmp_path)) == "smollm2-135m"  # a model, not a run
