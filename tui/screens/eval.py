"""One run's evaluations: the latest results (tuned vs base), and a form that starts a new eval.

The eval runs as its own background process (services.launch_eval: `tuneforge eval RUN ...`,
output in runs/<name>/eval/console.log), so the app stays responsive and closing it does not stop
the eval; this screen polls the run's eval folder through the service layer every two seconds.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Log, Static

from tuneforge.runner import services
from tuneforge.runner.errors import TuneforgeError


def _list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


class EvalScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+s", "start", "Start eval")]
    DEFAULT_CSS = """
    EvalScreen #title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    EvalScreen #latest { padding: 0 1; height: auto; }
    EvalScreen .row { height: auto; padding: 0 1; }
    EvalScreen .row Label { width: 12; padding: 1 0; }
    EvalScreen .row Input { width: 1fr; }
    EvalScreen #error { color: $error; padding: 0 1; height: auto; }
    EvalScreen Log { height: 10; border: round $primary; }
    """

    def __init__(self, run_path: Path) -> None:
        super().__init__()
        self.run_path = Path(run_path)
        self.doc: dict | None = None  # the latest results.json shown

    def compose(self) -> ComposeResult:
        yield Static(f"eval · {self.run_path.name} · {self.run_path}", id="title")
        with VerticalScroll():
            yield Static("", id="latest")
            for label, ident, value, hint in (
                ("data", "data", "", "data file(s) with reference answers, comma-separated"),
                ("modes", "modes", "loss,generate", "loss, generate, bench"),
                ("tasks", "tasks", "", "for bench: mmlu, ceval, cmmlu or an lm-eval task"),
                ("bench dir", "bench_dir", "", "folder with mmlu/ ceval/ cmmlu/ (default $TUNEFORGE_BENCH_DIR)"),
            ):
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield Input(value=value, placeholder=hint, id=ident)
            with Horizontal(classes="row"):
                yield Checkbox("also score the base model", True, id="base")
                yield Button("Start eval", variant="primary", id="start")
            yield Static("", id="error")
            yield Log(id="console", max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_results()
        self.set_interval(2.0, self.refresh_results)

    def refresh_results(self) -> None:
        doc = self.doc = services.latest_eval(self.run_path)
        latest = self.query_one("#latest", Static)
        if doc is None:
            latest.update("No eval of this run yet: fill in the form and press Start eval (ctrl+s).")
        else:
            latest.update(services.eval_table(doc))
            if doc.get("state") == "failed":
                self.query_one("#error", Static).update(f"last eval failed: {doc.get('error')}")
        text = services.eval_console(self.run_path)
        log = self.query_one(Log)
        log.clear()
        log.write(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_start(self) -> None:
        value = {w.id: w.value for w in self.query(Input)}
        error = self.query_one("#error", Static)
        try:
            spec = services.eval_spec(modes=_list(value["modes"]) or None, tasks=_list(value["tasks"]),
                                      bench_dir=value["bench_dir"].strip() or None, base=self.query_one(Checkbox).value)
            log = services.launch_eval(self.run_path, spec, _list(value["data"]))
        except TuneforgeError as exc:
            error.update(str(exc))
            return
        error.update("")
        self.notify(f"eval of {self.run_path.name} started; output in {log}")

    def action_back(self) -> None:
        self.app.pop_screen()
