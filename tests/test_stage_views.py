"""Each stage's own figures, from metrics.jsonl to every view: a real TRL DPOTrainer run (tiny Llama,
real SmolLM2 tokenizer) recorded by RunRecorder keeps rewards/margins & co. under TRL's names in train
and eval records; plain lines, `tuneforge watch`, the rich panel, `tuneforge plot` and the TUI monitor
show the stage's key figures; KTO, reward-model and ORPO records show theirs."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from tuneforge.runner import rundir, stage_figures
from tuneforge.runner.progress import PlainProgress, RichProgress, plain_line

pytestmark = pytest.mark.timeout(600)
DPO_FIGURES = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


def _finish(run: rundir.RunDir, steps: int) -> None:
    run.update_status(state="finished", pid=None, host="elsewhere", step=steps, total_steps=steps,
                      started_at=rundir.now_iso(), started_ts=time.time() - 10, ended_at=rundir.now_iso())


def _write_recipe(run: rundir.RunDir, model_dir: Path, data: Path, **extra) -> None:
    from tuneforge.runner.recipe import recipe_from_dict, recipe_to_yaml

    recipe = recipe_from_dict({"name": run.name, "model": {"name_or_path": str(model_dir)}, "device": "cpu",
                               "data": {"train": [{"path": str(data)}], "max_length": 64}, **extra})
    run.recipe.write_text(recipe_to_yaml(recipe), encoding="utf-8")


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, tmp_path_factory) -> rundir.RunDir:
    """TRL 1.16's DPOTrainer (LoRA, reference = adapter off) for 4 steps with an eval at the end,
    RunRecorder writing metrics.jsonl; then saved as stage dpo's run layout (adapter/ + tokenizer)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tuneforge.runner.callbacks import RunRecorder

    root = tmp_path_factory.mktemp("dpo-view")
    rows = [{"instruction": f"Say something kind, number {i}.", "chosen": "You are great and kind.",
             "rejected": "No."} for i in range(8)]
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = rundir.create(root / "runs", "dpo-run")
    _write_recipe(run, tiny_model_dir, data, stage="dpo")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    conv = [{"prompt": [{"role": "user", "content": r["instruction"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    ds = Dataset.from_list(conv)
    args = DPOConfig(output_dir=str(run.checkpoints), max_steps=4, logging_steps=1, eval_strategy="steps", eval_steps=4,
                     per_device_train_batch_size=2, per_device_eval_batch_size=4, report_to=[], use_cpu=True,
                     max_length=64, save_strategy="no", learning_rate=2e-3, disable_tqdm=True, seed=0)
    trainer = DPOTrainer(model=LlamaForCausalLM.from_pretrained(tiny_model_dir), args=args, train_dataset=ds,
                         eval_dataset=ds.select(range(4)), processing_class=tok,
                         peft_config=LoraConfig(r=4, target_modules="all-linear"),
                         callbacks=[RunRecorder(run, PlainProgress(io.StringIO()), time.time())])
    trainer.train()
    trainer.save_model(str(run.adapter))
    tok.save_pretrained(str(run.adapter))
    _finish(run, 4)
    return run


def _records(run: rundir.RunDir) -> tuple[list[dict], list[dict]]:
    recs = run.read_metrics()
    return [r for r in recs if r.get("loss") is not None], [r for r in recs if r.get("eval_loss") is not None]


def test_metrics_keep_dpo_figures_under_trl_names(dpo_run):
    train, evals = _records(dpo_run)
    assert [r["step"] for r in train] == [1, 2, 3, 4] and len(evals) == 1
    for rec in train:
        assert all(isinstance(rec[k], float) for k in DPO_FIGURES), rec
        assert rec["lr"] is not None and rec["grad_norm"] is not None  # the usual fields stay
    assert all(isinstance(evals[0][f"eval_{k}"], float) for k in DPO_FIGURES), evals[0]
    # TRL's clock figures are not kept: the record has its own (train_s, tokens_per_s)
    assert not any(k.endswith(("_runtime", "_per_second")) for r in train + evals for k in r)
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"]  # it learned the toy preference


def test_plain_lines_and_watch_show_margin_and_accuracy(dpo_run):
    train, evals = _records(dpo_run)
    last = train[-1]
    line = plain_line(last)  # what RunRecorder logs to train.log: the stage comes from the record's keys
    margin, acc = f"margin {last['rewards/margins']:+.3f}", f"acc {last['rewards/accuracies']:.0%}"
    assert f"loss {last['loss']:.4f} | {margin} | {acc} | lr" in line
    assert "eval margin" in plain_line(evals[0]) and "eval acc" in plain_line(evals[0])

    from tuneforge.runner.watch import watch

    out = io.StringIO()
    assert watch(dpo_run, "plain", interval=0.05, out=out) == "finished"
    text = out.getvalue()
    assert text.splitlines()[0].startswith("tuneforge watch · dpo-run · dpo")
    assert f"step 4/4 | loss {last['loss']:.4f} | {margin} | {acc}" in text
    assert f"eval margin {evals[0]['eval_rewards/margins']:+.3f}" in text
    # the ending line sums the run up with the stage's figures at its end (the last eval's)
    end = text.splitlines()[-1]
    assert end.startswith("run dpo-run finished (step 4/4") and f"eval margin {evals[0]['eval_rewards/margins']:+.3f}" in end
    from tuneforge.runner.watch import summary

    assert summary(dpo_run)["stage"] == "dpo"


def test_rich_panel_shows_the_stage_figures_and_a_margin_sparkline(dpo_run):
    from rich.console import Console

    train, evals = _records(dpo_run)
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None, legacy_windows=False)
    p = RichProgress(console=console, stage="dpo")
    p.start("tuneforge · dpo-run", 4)
    for rec in train + evals:
        p.update(rec)
    p.stop()
    frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    panel = frame[frame.rfind("╭"):]
    lines = [ln for ln in panel.splitlines() if ln.strip()]
    assert lines and all(len(ln) <= 80 for ln in lines), lines
    body = "\n".join(lines)
    last = train[-1]
    for needle in (f"margin {last['rewards/margins']:+.3f}", f"acc {last['rewards/accuracies']:.0%}",
                   f"chosen {last['rewards/chosen']:+.3f}", f"eval margin {evals[0]['eval_rewards/margins']:+.3f}"):
        assert needle in body, (needle, body)
    assert re.search(r"margin [▁▂▃▄▅▆▇█]{4}", body), body  # one point per training record


def _png_size(path: Path) -> tuple[int, int]:
    import struct

    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_plot_adds_a_stage_panel(dpo_run, tmp_path):
    from tuneforge.runner.plot import plot_run

    out = plot_run(dpo_run, tmp_path / "dpo.png")
    series = stage_figures.series(dpo_run.read_metrics(), "dpo")
    assert {f.key for f in series} == set(DPO_FIGURES)
    assert all(len(pts["train"]) == 4 and len(pts["eval"]) == 1 for pts in series.values())
    # an sft run's plot is the loss alone: the dpo plot is taller by the second panel
    sft = rundir.create(tmp_path / "runs", "sft")
    sft.recipe.write_text("stage: sft\n", encoding="utf-8")
    for rec in dpo_run.read_metrics():
        sft.append_metrics({k: v for k, v in rec.items() if "/" not in k})
    w, h = _png_size(out)
    w2, h2 = _png_size(plot_run(sft, tmp_path / "sft.png"))
    assert w == w2 and h > 1.5 * h2
    # a run whose files do not name its stage: the records' keys do
    unnamed = rundir.create(tmp_path / "runs", "unnamed")
    unnamed.metrics.write_bytes(dpo_run.metrics.read_bytes())
    assert _png_size(plot_run(unnamed, tmp_path / "unnamed.png")) == (w, h)


def test_the_tui_monitor_shows_the_stage_figures(dpo_run):
    from tui_helpers import screen_text, sync, wait_for, wait_screen

    from tuneforge.runner import services
    from tuneforge.tui.app import TuneforgeApp

    train, _ = _records(dpo_run)
    last = train[-1]

    @sync
    async def drive():
        app = TuneforgeApp(runs_dir=dpo_run.path.parent)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_screen(pilot, "RunsScreen")
            await pilot.press("enter")
            await wait_screen(pilot, "MonitorScreen")
            await wait_for(pilot, lambda: len(app.screen.losses) == 4, 10, "losses read")
            text = screen_text(app)
            assert f"margin {last['rewards/margins']:+.3f}" in text and f"acc {last['rewards/accuracies']:.0%}" in text
            assert "eval margin" in text

    drive()
    assert services.stage_figures(dpo_run.path, {"loss": 1.0}) == []  # a record without figures adds nothing


def test_a_dpo_run_chats_like_an_sft_run(dpo_run):
    from tuneforge.runner import chat

    engine = chat.load(str(dpo_run.path), device="cpu", warmup=False)
    assert engine.has_adapter
    reply = "".join(engine.stream([{"role": "user", "content": "Hi"}], chat.Sampling(max_new_tokens=3)))
    assert engine.last_stats.new_tokens >= 1 and isinstance(reply, str)


def test_kto_rm_orpo_and_simpo_records_show_their_own_figures():
    kto = {"step": 2, "total_steps": 9, "loss": 0.5, "kl": 0.0123, "rewards/chosen": 0.2, "rewards/rejected": -0.1,
           "rewards/margins": 0.3}
    assert plain_line(kto) == "step 2/9 | loss 0.5000 | kl +0.012 | margin +0.300"
    assert stage_figures.describe(kto, "kto") == ["kl +0.012", "margin +0.300", "desirable +0.200", "undesirable -0.100"]
    rm = {"step": 3, "total_steps": 9, "loss": 0.4, "accuracy": 0.875, "margin": 1.5, "mean_reward": 0.1,
          "eval_loss": None}
    assert plain_line(rm) == "step 3/9 | loss 0.4000 | acc 88% | margin +1.500"
    orpo = {"step": 1, "total_steps": 9, "loss": 2.0, "log_odds_ratio": -0.7, "nll_loss": 1.9, "rewards/margins": 0.01,
            "rewards/accuracies": 0.5}
    assert plain_line(orpo) == "step 1/9 | loss 2.0000 | margin +0.010 | acc 50%"
    assert "log-odds -0.700" in stage_figures.describe(orpo)
    simpo = {"eval_loss": 0.9, "eval_rewards/margins": -0.25, "eval_rewards/accuracies": 0.25, "eval_nll_loss": 2.0}
    assert stage_figures.describe(simpo, "simpo", headline=True) == ["eval margin -0.250", "eval acc 25%"]
    assert stage_figures.describe(kto, "sft") == [] and stage_figures.describe({"loss": 1.0}) == []


def test_a_runs_stage_comes_from_status_then_recipe(tmp_path):
    run = rundir.create(tmp_path, "r")
    assert stage_figures.run_stage(run.path) is None  # no recipe yet: the views go by the records' keys
    run.recipe.write_text("name: r\n", encoding="utf-8")
    assert stage_figures.run_stage(run.path) is None
    run.recipe.write_text("stage: kto\n", encoding="utf-8")
    assert stage_figures.run_stage(run.path) == "kto"
    run.update_status(stage="rm")
    assert stage_figures.run_stage(run.path) == "rm"


TRL_SOURCES = {"dpo": "trainer/dpo_trainer.py", "kto": "trainer/kto_trainer.py", "rm": "trainer/reward_trainer.py",
               "orpo": "experimental/orpo/orpo_trainer.py", "simpo": "experimental/cpo/cpo_trainer.py"}


@pytest.mark.parametrize("stage", sorted(TRL_SOURCES))
def test_every_figure_is_a_key_the_installed_trl_logs(stage):
    """The figures' keys are read from TRL's own metric code: a rename in TRL fails here, not silently."""
    import importlib.util

    trl_dir = Path(importlib.util.find_spec("trl").origin).parent
    source = (trl_dir / TRL_SOURCES[stage]).read_text(encoding="utf-8")
    for f in stage_figures.FIGURES[stage]:
        assert re.search(r'\[(f?"|f"\{prefix\})' + re.escape(f.key) + r'"\]', source), (stage, f.key)
