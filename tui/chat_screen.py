"""The chat screen: talk to a run (or a model), stream replies, compare with the base model.

The model loads in a thread worker and every reply is generated in a thread worker, so the UI
stays responsive; pieces of text reach the screen as posted messages. The engine
(`tuneforge.runner.chat`) and the conversation (`tuneforge.runner.chat_session`) do the work;
this module only wires keys, commands and widgets to them.
"""

from __future__ import annotations

import threading
from textual import work
from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, LoadingIndicator, Static

from tuneforge.runner.chat import ChatModel, Sampling, Stats
from tuneforge.runner.chat_session import BASE, TUNED, Conversation, help_text, parse_command, parse_settings
from tuneforge.runner.errors import TuneforgeError

from .widgets.chat_input import PromptInput
from .widgets.chat_message import ReplyView, UserMessage
from .widgets.chat_settings import SettingsPanel

KEYS_HELP = ("keys: enter send · ctrl+j new line · esc / ctrl+c stop the reply · f2 settings · "
             "f3 compare · ctrl+t fold thinking · ctrl+q quit")


class WorkerCall(Message):
    """A worker thread asks the screen to run `fn(*args)` on the UI thread.

    Posting a message never blocks (unlike `call_from_thread`, which waits for the answer and
    would hang a worker forever if the app closed meanwhile); messages keep their order.
    """

    def __init__(self, fn, args: tuple) -> None:
        super().__init__()
        self.fn, self.args = fn, args


class Note(Static):
    """A line from tuneforge in the transcript (help, settings, stats, errors)."""

    DEFAULT_CSS = """
    Note { color: $text-muted; padding: 0 1; margin: 1 0 0 0; }
    Note.-error { color: $error; }
    """


class TurnView(Vertical):
    """One prompt and its answers (two side by side in compare mode)."""

    DEFAULT_CSS = """
    TurnView { height: auto; }
    TurnView > Horizontal { height: auto; }
    TurnView > Horizontal > ReplyView { width: 1fr; }
    """

    def __init__(self, prompt: str) -> None:
        super().__init__()
        self.prompt = prompt
        self.replies: dict[str, ReplyView] = {}

    def compose(self) -> ComposeResult:
        yield UserMessage(self.prompt)
        yield Horizontal()

    async def reset(self, variants: dict[str, str]) -> dict[str, ReplyView]:
        """Fresh, empty reply views ({variant: title}); old ones are removed."""
        row = self.query_one(Horizontal)
        await row.remove_children()
        self.replies = {v: ReplyView(title, v) for v, title in variants.items()}
        await row.mount_all(self.replies.values())
        return self.replies


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop"),
        Binding("ctrl+c", "stop", "Stop", show=False, priority=True),
        Binding("f2", "toggle_settings", "Settings"),
        Binding("f3", "toggle_compare", "Compare"),
        Binding("ctrl+t", "toggle_think", "Fold thinking"),
    ]
    DEFAULT_CSS = """
    #body { height: 1fr; }
    #main { width: 1fr; }
    #transcript { height: 1fr; padding: 0 1; }
    #loading { height: 3; }
    PromptInput { height: auto; min-height: 3; max-height: 10; }
    """

    def __init__(self, ref: str, *, adapter: str | None = None, compare: bool = False, sampling: Sampling | None = None,
                 conversation: Conversation | None = None, engine: ChatModel | None = None,
                 closable: bool = False) -> None:
        super().__init__()
        self.closable = closable  # opened from another screen (the monitor): esc when idle goes back
        self.ref, self.adapter = ref, adapter
        self.compare = compare
        self.sampling = sampling or (engine.sampling if engine else Sampling())
        self.conversation = conversation or Conversation()
        self.engine: ChatModel | None = None
        self._preloaded = engine
        self.generating = False
        self.stop_event = threading.Event()
        self.turn_views: list[TurnView] = []
        self.think_collapsed = False
        self.last_stats: dict[str, Stats] = {}
        self.load_error: TuneforgeError | Exception | None = None

    # --- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="main"):
                with VerticalScroll(id="transcript"):
                    yield Note(f"Loading {self.ref} …", id="welcome")
                    yield LoadingIndicator(id="loading")
                yield PromptInput(id="prompt")
            yield SettingsPanel(self.sampling, self.conversation.system)
        yield Footer()

    def on_mount(self) -> None:
        self.title, self.sub_title = "tuneforge chat", self.ref
        self.query_one(PromptInput).focus()
        if self._preloaded is not None:
            self._loaded(self._preloaded, None)
        else:
            self._load()

    # --- loading ---------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        from tuneforge.runner import chat

        try:
            engine = chat.load(self.ref, adapter=self.adapter)
        except Exception as exc:  # noqa: BLE001 - shown on the screen with its fix
            self.post_message(WorkerCall(self._load_failed, (exc,)))
            return
        compare_error = None
        if self.compare:
            try:
                engine.base()
            except Exception as exc:  # noqa: BLE001
                compare_error = exc
        self.post_message(WorkerCall(self._loaded, (engine, compare_error)))

    def on_worker_call(self, message: WorkerCall) -> None:
        message.fn(*message.args)

    def _loaded(self, engine: ChatModel, compare_error: Exception | None) -> None:
        engine.sampling = self.sampling
        self.engine = engine
        self.query("#loading").remove()
        self.sub_title = engine.name
        self.query_one("#welcome", Note).update(
            f"Chatting with {engine.name}{' — compare mode: base | tuned' if self.compare else ''}. "
            f"/help lists commands.\n{KEYS_HELP}")
        if compare_error is not None:
            self.compare = False
            self._error(compare_error)

    def _load_failed(self, exc: Exception) -> None:
        self.load_error = exc
        self.query("#loading").remove()
        self.query_one("#welcome", Note).update(f"Could not load {self.ref}.")
        self._error(exc)

    # --- sending ---------------------------------------------------------------------------
    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        await self.submit(event.text)

    async def submit(self, text: str) -> None:
        """What Enter does: run a /command, or send a prompt."""
        prompt = self.query_one(PromptInput)
        if not text.strip():
            return
        cmd = parse_command(text)
        try:
            if cmd is not None:
                prompt.text = ""
                await self._command(cmd.name, cmd.arg)
                return
            self._ready()
            prompt.text = ""
            self.conversation.add(text.strip("\n"))
            turn = TurnView(text.strip("\n"))
            self.turn_views.append(turn)
            await self.query_one("#transcript").mount(turn)
            await self._answer(len(self.conversation.turns) - 1)
        except TuneforgeError as exc:
            self._error(exc)

    def _ready(self) -> None:
        if self.engine is None:
            if self.load_error is not None:
                raise TuneforgeError("there is no model to talk to", "quit with ctrl+q and check the error above")
            raise TuneforgeError("the model is still loading", "wait a moment and press enter again")
        if self.generating:
            raise TuneforgeError("a reply is still being written", "wait for it, or press esc to stop it")

    def _variants(self) -> dict[str, str]:
        assert self.engine is not None
        if not self.compare:
            return {TUNED: self.engine.name}
        return {BASE: "base (no fine-tuning)", TUNED: f"tuned · {self.engine.name}"}

    async def _answer(self, index: int) -> None:
        views = await self.turn_views[index].reset(self._variants())
        for view in views.values():
            view.collapse_think(self.think_collapsed)
        self.generating = True
        self.stop_event = threading.Event()
        self.refresh_bindings()
        order = [TUNED, BASE] if self.compare else [TUNED]  # the tuned answer first: it is what you came for
        self._generate(index, order, views, self.stop_event)

    @work(thread=True, exclusive=True, group="generate")
    def _generate(self, index: int, order: list[str], views: dict[str, ReplyView], stop: threading.Event) -> None:
        def call(fn, *args):
            if not self.post_message(WorkerCall(fn, args)):
                stop.set()  # the screen is gone (the app closed mid-reply): nobody is reading
        try:
            for variant in order:
                view = views[variant]
                if stop.is_set():
                    call(self._reply_done, index, variant, "", None, True)
                    continue
                try:
                    if variant == BASE and self.engine._base is None:
                        call(view.set_status, "loading the base model …")
                    model = self.engine if variant == TUNED else self.engine.base()
                    parts: list[str] = []
                    for piece in model.stream(self.conversation.messages(variant, upto=index), self.sampling, stop):
                        parts.append(piece)
                        call(view.append, piece)
                    call(self._reply_done, index, variant, "".join(parts), model.last_stats, stop.is_set())
                except Exception as exc:  # noqa: BLE001 - shown in the reply, the chat goes on
                    call(self._reply_failed, index, variant, exc)
        finally:
            call(self._generation_over)

    def _reply_done(self, index: int, variant: str, text: str, stats: Stats | None, stopped: bool) -> None:
        turn = self.conversation.turns[index]
        turn.replies[variant] = text
        if stopped:
            turn.stopped.add(variant)
        if stats is not None:
            self.last_stats[variant] = stats
        status = ("stopped · " if stopped else "") + (stats.describe() if stats else "not started")
        self.turn_views[index].replies[variant].finish(status)

    def _reply_failed(self, index: int, variant: str, exc: Exception) -> None:
        view = self.turn_views[index].replies[variant]
        view.finish(f"failed: {getattr(exc, 'message', None) or f'{type(exc).__name__}: {exc}'}")
        view.add_class("-error")
        self._error(exc)

    def _generation_over(self) -> None:
        self.generating = False
        self.refresh_bindings()
        self.query_one("#transcript").scroll_end(animate=False)

    def on_unmount(self) -> None:
        self.stop_event.set()  # quitting mid-reply ends the generation thread at the next token

    # --- actions ---------------------------------------------------------------------------
    def action_stop(self) -> None:
        """Esc / ctrl+c: stop the reply being written; what was written stays."""
        if not self.generating:
            raise SkipAction()  # ctrl+c falls through to copy in the prompt box
        self.stop_event.set()

    def action_stop_or_close(self) -> None:
        """Esc: stop the reply; when idle on a screen opened from another one, go back to it."""
        if not self.generating and self.closable:
            self.app.pop_screen()
            return
        self.action_stop()

    def action_toggle_settings(self) -> None:
        panel = self.query_one(SettingsPanel)
        panel.toggle_class("-visible")
        if panel.has_class("-visible"):
            panel.refresh_values(self.conversation.system)

    def action_toggle_compare(self) -> None:
        try:
            if not self.compare and self.engine is not None and not self.engine.can_compare:
                self.engine.base()  # raises the explanation
            self.compare = not self.compare
        except TuneforgeError as exc:
            self._error(exc)
            return
        self._note(f"compare mode {'on: base | tuned answer side by side' if self.compare else 'off'}"
                   " (from the next prompt)")

    def action_toggle_think(self) -> None:
        self.think_collapsed = not self.think_collapsed
        for view in self.query(ReplyView):
            view.collapse_think(self.think_collapsed)

    def on_settings_panel_changed(self, event: SettingsPanel.Changed) -> None:
        self.conversation.system = self.query_one(SettingsPanel).system.strip() or None

    # --- commands --------------------------------------------------------------------------
    async def _command(self, name: str, arg: str) -> None:
        conv = self.conversation
        if name == "/help":
            self._note(help_text() + "\n" + KEYS_HELP)
        elif name == "/set":
            for key, value in parse_settings(arg):
                self.sampling.set(key, value)
            self.query_one(SettingsPanel).refresh_values(conv.system)
            self._note(self.sampling.describe())
        elif name == "/system":
            if arg:
                conv.system = None if arg.lower() == "none" else arg
            self.query_one(SettingsPanel).refresh_values(conv.system)
            self._note(f"system prompt: {conv.system or '(none)'}")
        elif name == "/stats":
            if not self.last_stats:
                raise TuneforgeError("no reply yet", "send a prompt first")
            self._note("\n".join(f"{variant}: {stats.describe()}" for variant, stats in sorted(self.last_stats.items())))
        elif name == "/save":
            path, _, which = arg.partition(" ")
            if not path:
                raise TuneforgeError("/save needs a file name", "e.g. /save chats.jsonl")
            saved = conv.save(path, BASE if which.strip() == BASE else TUNED)
            self._note(f"saved the conversation to {saved}")
        elif name == "/compare":
            self.action_toggle_compare()
        else:
            if self.generating:
                raise TuneforgeError("a reply is still being written", "wait for it, or press esc to stop it")
            if name == "/clear":
                conv.clear()
                await self.query("#transcript > TurnView, #transcript > Note.-transient").remove()
                self.turn_views.clear()
                self._note("new conversation")
            elif name == "/undo":
                turn = conv.undo()
                await self.turn_views.pop().remove()
                self.query_one(PromptInput).text = turn.user
            elif name == "/retry":
                self._ready()
                if not conv.turns:
                    raise TuneforgeError("nothing to retry", "send a prompt first")
                conv.turns[-1].replies.clear()
                conv.turns[-1].stopped.clear()
                await self._answer(len(conv.turns) - 1)

    def _note(self, text: str, error: bool = False) -> None:
        note = Note(text, markup=False, classes="-transient" + (" -error" if error else ""))
        transcript = self.query_one("#transcript")
        transcript.mount(note)
        transcript.scroll_end(animate=False)

    def _error(self, exc: Exception) -> None:
        if isinstance(exc, TuneforgeError):
            text = f"error: {exc.message}" + (f"\nfix: {exc.fix}" if exc.fix else "")
        else:
            text = f"error: {type(exc).__name__}: {exc}"
        self._note(text, error=True)
        self.notify(text, severity="error", timeout=8)


class ChatApp(App):
    """`tuneforge chat`: one chat screen."""

    TITLE = "tuneforge chat"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, ref: str, **screen_kwargs) -> None:
        super().__init__()
        self.ref = ref
        self.screen_kwargs = screen_kwargs

    def on_mount(self) -> None:
        self.push_screen(ChatScreen(self.ref, **self.screen_kwargs))

    @property
    def chat(self) -> ChatScreen:
        screen = self.screen
        assert isinstance(screen, ChatScreen)
        return screen

