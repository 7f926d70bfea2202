"""The chat screen, driven with Textual's Pilot against a real tiny model and a real trained run."""

from __future__ import annotations

import pytest

from chat_helpers import poll, tiny_lora_run
from tuneforge.runner import chat
from tuneforge.runner.chat_session import BASE, TUNED
from tuneforge.runner.data.template import builtin_template
from tuneforge.tui.chat_screen import ChatApp, ChatScreen, Note, TurnView
from tuneforge.tui.widgets.chat_message import ReplyView, split_think
from tuneforge.tui.widgets.chat_settings import SettingsPanel

SIZE = (120, 40)
pytestmark = pytest.mark.anyio  # async tests run on anyio's pytest plugin (installed with httpx)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir):
    return tiny_lora_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


@pytest.fixture(scope="session")
def run_engine(tiny_run):
    return chat.load(str(tiny_run), device="cpu")


@pytest.fixture(scope="session")
def base_engine(tiny_model_dir):
    """The untrained tiny model: it never learned to stop, so its replies run long."""
    return chat.load(str(tiny_model_dir), device="cpu")


async def _send(pilot, text: str) -> None:
    screen = pilot.app.screen
    screen.query_one("#prompt").text = text
    await pilot.press("enter")


def _notes(screen) -> str:
    return "\n".join(str(n.render()) for n in screen.query(Note))


async def test_model_loads_in_a_worker_behind_a_loading_indicator(tiny_run):
    app = ChatApp(str(tiny_run), compare=True, sampling=chat.Sampling(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        assert screen.query("LoadingIndicator")  # shown while the model loads
        await pilot.press("h", "i")  # the UI answers keys while loading
        assert screen.query_one("#prompt").text == "hi"
        await poll(lambda: screen.engine is not None, timeout=120)
        await pilot.pause()
        assert not screen.query("LoadingIndicator")
        assert f"Chatting with {tiny_run.name}" in _notes(screen)
        assert screen.engine.chat_template.endswith(builtin_template("alpaca"))  # the run's, after its tool format
        await _send(pilot, "Who are you?")
        await poll(lambda: not screen.generating and len(screen.conversation.turns[0].replies) == 2, timeout=60)
        # The command line's settings reach both models, the base included (made while loading).
        assert screen.last_stats[BASE].new_tokens <= 5 and screen.last_stats[TUNED].new_tokens <= 5


async def test_load_error_is_shown_with_its_fix(tmp_path):
    app = ChatApp(str(tmp_path / "no-such-model"))
    async with app.run_test(size=SIZE) as pilot:
        await poll(lambda: app.chat.load_error is not None, timeout=60)
        await pilot.pause()
        assert "error:" in _notes(app.chat) and "fix:" in _notes(app.chat)


async def test_reply_streams_in_and_stop_keeps_the_partial_text(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen: ChatScreen = app.chat
        await _send(pilot, "/set max_new_tokens=1500")
        await _send(pilot, "Tell me everything")
        view = screen.query_one(ReplyView)
        # Text is on screen while the reply is still being written.
        await poll(lambda: view.markdown_source.strip() != "", timeout=60)
        assert screen.generating and not view.done
        partial = view.markdown_source
        await pilot.press("escape")
        await poll(lambda: not screen.generating, timeout=60)
        await pilot.pause()
        turn = screen.conversation.turns[0]
        kept = turn.replies[TUNED]
        assert kept.strip().startswith(partial.strip()) and TUNED in turn.stopped
        assert screen.last_stats[TUNED].stopped and screen.last_stats[TUNED].new_tokens < 1500
        assert view.markdown_source.strip() == kept.strip()
        assert "stopped" in str(view.query_one(".reply-status").render())
        await _send(pilot, "/stats")
        assert "to first token" in _notes(screen) and "tokens/s" in _notes(screen)


async def test_ctrl_c_stops_a_reply_too(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        await _send(pilot, "/set max_new_tokens=1500")
        await _send(pilot, "Go on and on")
        await poll(lambda: screen.query(ReplyView) and screen.query_one(ReplyView).text.strip() != "", timeout=60)
        await pilot.press("ctrl+c")
        await poll(lambda: not screen.generating, timeout=60)
        assert TUNED in screen.conversation.turns[0].stopped
        assert app.is_running  # ctrl+c stopped the reply, not the app


async def test_quitting_mid_reply_ends_the_generation(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    base_engine.last_stats = None
    async with app.run_test(size=SIZE) as pilot:
        await _send(pilot, "/set max_new_tokens=1500")
        await _send(pilot, "Go on and on")
        await poll(lambda: app.chat.query(ReplyView) and app.chat.query_one(ReplyView).text.strip() != "", timeout=60)
        assert base_engine.lock.locked()  # generating
        await pilot.press("ctrl+q")
    await poll(lambda: not base_engine.lock.locked() and base_engine.last_stats is not None, timeout=30)
    assert base_engine.last_stats.stopped and base_engine.last_stats.new_tokens < 1500


async def test_enter_sends_and_ctrl_j_adds_a_line(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        await _send(pilot, "/set max_new_tokens=4")
        await pilot.press("a", "ctrl+j", "b")
        assert screen.query_one("#prompt").text == "a\nb"
        await pilot.press("enter")
        await poll(lambda: not screen.generating and screen.conversation.turns, timeout=60)
        assert screen.conversation.turns[0].user == "a\nb"
        assert screen.query_one("#prompt").text == ""


async def test_save_writes_a_row_the_data_layer_reads(run_engine, tmp_path):
    from tuneforge.runner.data import DataReport, load_examples
    from tuneforge.runner.recipe import DatasetSpec

    app = ChatApp("tiny", engine=run_engine)
    out = tmp_path / "chats.jsonl"
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        await _send(pilot, "/system You are Forge.")
        await _send(pilot, "/set max_new_tokens=8")
        await _send(pilot, "Who are you?")
        await poll(lambda: not screen.generating and screen.conversation.turns[0].replies, timeout=60)
        await _send(pilot, f"/save {out}")
        assert f"saved the conversation to {out}" in _notes(screen)
        reply = screen.conversation.turns[0].replies[TUNED]
    report = DataReport()
    [example] = load_examples(DatasetSpec(path=str(out), format="openai"), report)
    assert report.bad_count == 0
    assert [(m.role, m.content) for m in example.messages] == [
        ("system", "You are Forge."), ("user", "Who are you?"), ("assistant", reply)]


async def test_compare_shows_base_and_tuned_answers_side_by_side(run_engine):
    messages = [{"role": "user", "content": "Who are you?"}]
    sampling = chat.Sampling(max_new_tokens=10)
    expected = {TUNED: run_engine.reply(messages, sampling), BASE: run_engine.base().reply(messages, sampling)}
    assert expected[TUNED] != expected[BASE]
    app = ChatApp("tiny", engine=run_engine, compare=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        await _send(pilot, "/set max_new_tokens=10")
        await _send(pilot, "Who are you?")
        await poll(lambda: not screen.generating and len(screen.conversation.turns[0].replies) == 2, timeout=60)
        await pilot.pause()
        views = list(screen.query_one(TurnView).query(ReplyView))
        assert [v.variant for v in views] == [BASE, TUNED]  # base left, tuned right
        assert views[0].region.y == views[1].region.y and views[0].region.x < views[1].region.x
        assert {v.variant: v.text for v in views} == expected
        assert screen.conversation.turns[0].replies == expected
        assert all(screen.last_stats[v].new_tokens <= 10 for v in (BASE, TUNED))  # /set reaches both
        # The key switches compare off: the next prompt gets one answer.
        await pilot.press("f3")
        await _send(pilot, "And now?")
        await poll(lambda: not screen.generating and len(screen.conversation.turns) == 2
                   and screen.conversation.turns[1].replies, timeout=60)
        assert list(screen.conversation.turns[1].replies) == [TUNED]


async def test_retry_undo_clear_and_settings_panel(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        conv = screen.conversation
        await _send(pilot, "/set max_new_tokens=6")
        await _send(pilot, "First question")
        await poll(lambda: not screen.generating and conv.turns[0].replies, timeout=60)
        first = conv.turns[0].replies[TUNED]
        await _send(pilot, "/retry")
        await poll(lambda: not screen.generating and conv.turns[0].replies, timeout=60)
        assert conv.turns[0].replies[TUNED] == first  # greedy: the same answer again
        assert len(screen.query(ReplyView)) == 1
        await _send(pilot, "/undo")
        assert conv.turns == [] and not screen.query(TurnView)
        assert screen.query_one("#prompt").text == "First question"  # back in the box to edit
        await _send(pilot, "/set temprature=2")
        assert "did you mean 'temperature'" in _notes(screen)
        # The side panel edits the same settings the engine uses.
        await pilot.press("f2")
        panel = screen.query_one(SettingsPanel)
        assert panel.has_class("-visible") and panel.query_one("#set-max_new_tokens").value == "6"
        panel.query_one("#set-temperature").value = "0.5"
        panel.query_one("#set-top_k").value = "-3"
        await pilot.pause()
        assert base_engine.sampling.temperature == 0.5 and base_engine.sampling.top_k == 0
        assert panel.query_one("#set-top_k").has_class("-invalid")
        panel.query_one("#system").text = "Answer in French."
        await pilot.pause()
        assert conv.system == "Answer in French."
        await _send(pilot, "/set temperature=0")
        await _send(pilot, "Hi")
        await poll(lambda: not screen.generating and conv.turns and conv.turns[0].replies, timeout=60)
        await _send(pilot, "/clear")
        assert conv.turns == [] and conv.system == "Answer in French." and not screen.query(TurnView)


def test_think_blocks_are_split_off():
    assert split_think("no thinking here") == (None, "no thinking here", False)
    assert split_think("<think>plan a") == ("plan a", "", True)
    assert split_think("<think>plan</think>\n\nThe answer") == ("plan", "The answer", False)
    assert split_think("plan</think>answer") == ("plan", "answer", False)  # opened by the template


async def test_think_block_is_dimmed_and_folds(base_engine):
    app = ChatApp("tiny", engine=base_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat
        turn = TurnView("q")
        await screen.query_one("#transcript").mount(turn)
        [view] = (await turn.reset({TUNED: "reasoner"})).values()
        for piece in ["<think>", "first add ", "the numbers", "</think>", "**42**"]:
            view.append(piece)
            await poll(lambda: not view._dirty, timeout=10)  # each piece painted on its own, as it streams
        await pilot.pause()
        think = view.query_one(".think")
        assert view.has_class("-has-think") and "first add the numbers" in str(think.render())
        assert view.markdown_source == "**42**"
        assert think.styles.text_style.italic and think.styles.color != view.query_one("Markdown").styles.color
        collapsible = view.query_one("Collapsible")
        assert not collapsible.collapsed
        await pilot.press("ctrl+t")
        assert collapsible.collapsed


BOX_APP = '''
import sys
from pathlib import Path
from textual.app import App
from tuneforge.tui.widgets.chat_input import PromptInput

out = Path(sys.argv[1])

class Box(App):
    def compose(self):
        yield PromptInput()
    def on_mount(self):
        (out.parent / "ready").write_text("1")
    def on_prompt_input_submitted(self, event):
        out.write_text(event.text)
        self.exit()

Box().run()
'''


def test_enter_sends_and_ctrl_j_adds_a_line_in_a_real_terminal(tmp_path):
    """The bytes a terminal really sends (inside tmux): Enter is \\r, ctrl+j is \\n."""
    import os
    import subprocess
    import sys
    import time

    from conftest import require_tools

    require_tools("tmux")
    script, out = tmp_path / "box.py", tmp_path / "sent.txt"
    script.write_text(BOX_APP)
    session = f"tf-chat-keys-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "10",
                    f"{sys.executable} {script} {out}"], check=True)

    def wait_for(path, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < deadline, f"{path.name} did not appear"
            time.sleep(0.05)

    try:
        wait_for(tmp_path / "ready")
        subprocess.run(["tmux", "send-keys", "-t", session, "first line", "C-j", "second line", "Enter"], check=True)
        wait_for(out)
        assert out.read_text() == "first line\nsecond line"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
