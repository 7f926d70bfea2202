"""Where training happens: recipe → model + data → the stage's trainer → run directory.

Read top to bottom: `train(recipe)` places the run on a device, makes the run directory, loads the
model and tokenizer (an earlier run's result for model.from_run), turns data into token ids, wraps
the model for the method, runs the stage's trainer (runner/stages/) with callbacks that write metrics.jsonl/status.json (callbacks.py), and saves the
final weights atomically.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import device as device_mod
from . import distributed
from . import cpu_attention, lifecycle, methods, packing, speed, threads, throughput
from . import model as model_mod
from . import rundir
from .progress import make_progress
from .recipe import Recipe, recipe_to_yaml

log = logging.getLogger("tuneforge")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class _Reporter:
    """Everything the run says goes to train.log and to the progress display."""

    def __init__(self, run: rundir.RunDir, progress):
        self.run, self.progress = run, progress
        self.handler = logging.FileHandler(run.log, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(self.handler)
        log.setLevel(logging.INFO)
        log.propagate = False

    def say(self, text: str) -> None:
        log.info(text)
        self.progress.message(text)

    def close(self) -> None:
        log.removeHandler(self.handler)
        self.handler.close()
        log.propagate = True  # a later caller in this process (tests, the TUI) sees the logger again


def _atomic_save(target: Path, save) -> None:
    """Save into a temporary sibling folder, then rename: a crash never leaves half the weights."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


@dataclass
class TrainResult:
    run: rundir.RunDir
    model: Any  # the trained model in memory (peft-wrapped for LoRA)
    tokenizer: Any


def train(recipe: Recipe, progress_mode: str = "auto", run_dir: Path | None = None,
          resume_from: Path | None = None, plain_every: float = 0.0) -> TrainResult:
    """Run one recipe to completion. Raises TuneforgeError for user mistakes (status: failed).
    run_dir: use this existing run directory (detach, resume); resume_from: a checkpoint folder;
    plain_every: plain progress lines at most every N seconds."""
    placement = device_mod.choose(recipe.device, recipe.precision)
    run = rundir.RunDir(Path(run_dir)) if run_dir else rundir.create(recipe.output.runs_dir, recipe.name, recipe.output.overwrite)
    run = distributed.rank_view(run)  # ranks other than 0 read the run's files but never write them
    saved = recipe.model_copy(deep=True)
    saved.name = run.name
    if distributed.is_main_process():
        run.recipe.write_text(recipe_to_yaml(saved), encoding="utf-8")
    run.update_status(**rundir.initial_status(), device=placement.device, precision=placement.precision,
                      precision_reason=placement.reason)
    progress = lifecycle.SafeProgress(make_progress(progress_mode, plain_every))
    rep = _Reporter(run, progress)
    life = lifecycle.Lifecycle(run, recipe, progress, rep.say, resume_from)
    try:
        with life.signals():
            model, tok = _train_in(run, recipe, placement, progress, rep, life)
            from .eval.during import after_training

            after_training(recipe, run, model, tok, rep.say)  # the recipe's eval: block (never raises)
    except BaseException as exc:
        state = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        progress.stop()
        if state == "stopped":  # asked for (tuneforge stop, ctrl-c, the monitor's s): one line, no traceback
            log.warning("run stopped: %s", getattr(exc, "reason", None) or exc or "interrupted")
        else:
            log.error("run %s: %s\n%s", state, exc, traceback.format_exc())
        if distributed.is_main_process():
            lifecycle.draw_loss_plot(run)
        run.update_status(state=state, ended_at=rundir.now_iso(), error=None if state == "stopped" else str(exc),
                          peak_rss_mb=round(peak_rss_mb(), 1), **life.end_fields(exc))
        raise
    finally:
        rep.close()
    return TrainResult(run, model, tok)


def _train_in(run: rundir.RunDir, recipe: Recipe, placement, progress, rep: _Reporter, life: lifecycle.Lifecycle):
    model_mod.quiet_hf()
    from transformers import PrinterCallback, set_seed

    from . import callbacks, stages, trackers
    from .data import tokenize_for
    from .data.template import resolve_chat_template
    from .eval import during as eval_during

    started = time.time()
    rep.say(f"run directory: {run.path}")
    life.prepare()
    rep.say(f"device {placement.device}, precision {placement.precision} ({placement.reason})")
    policy = threads.apply(recipe.speed.threads)  # the recipe's override is known only now
    run.update_status(threads=policy.as_status())
    rep.say(policy.describe())
    rate = throughput.matmul_rate(placement.device, placement.precision)  # for MFU; measured before loading
    run.update_status(matmul_flops=rate)
    set_seed(recipe.seed)

    resolved = model_mod.resolve_base(recipe.model)  # the model, or an earlier run's result (model.from_run)
    if recipe.model.from_run:
        run.update_status(from_run=model_mod.run_chain(recipe.model.from_run))
    tok = model_mod.load_tokenizer(resolved, recipe.model.revision, recipe.model.trust_remote_code)
    template, template_name = resolve_chat_template(tok, recipe.model.chat_template, recipe.data.tool_format)
    tok.chat_template = template  # saved with the weights: chat and export use exactly this one
    rep.say(f"stage {recipe.stage}; model {resolved.source} ({resolved.kind}: {resolved.path}); chat template: {template_name}")

    data = tokenize_for(recipe.data, tok, template, recipe.seed, **stages.data_options(recipe))
    rundir.write_json_atomic(run.data_report, data.report.to_dict())
    rep.say("data: " + data.report.summary())
    n_tokens = sum(len(t.input_ids) + len(t.rejected_ids or ()) for t in data.train)
    labelled = [t.n_trained for t in data.train]
    n_trained = sum(labelled)
    rep.say(f"data: {len(data.train)} train / {len(data.eval)} eval examples, {n_tokens} tokens ({n_trained} trained)")

    model = model_mod.load_model(resolved, **methods.load_options(recipe, placement), task=stages.model_task(recipe))
    attention = cpu_attention.use(model, recipe.data.max_length, placement.device)
    model.config.use_cache = False
    model = methods.apply_method(model, recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rep.say(f"method {recipe.method}: {trainable:,} of {total:,} parameters trainable ({trainable / total:.2%})")

    packed = packing.packing_on(recipe, getattr(model.config, "_attn_implementation", None))
    speed_args, speed_note = speed.plan(recipe, placement, [len(x.input_ids) for x in data.train], labelled, packed)
    rep.say(speed_note + f"; attention: {attention}")
    t = recipe.train
    per_epoch = math.ceil(stages.rows_per_epoch(recipe, data) / (t.batch_size * t.grad_accum))
    total_steps = t.max_steps or math.ceil(per_epoch * t.epochs)
    has_eval = bool(data.eval)
    args = dict(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate, lr_scheduler_type=t.scheduler,
        warmup_steps=int(round(t.warmup_ratio * total_steps)),
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy=("steps" if t.eval_steps else "epoch") if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps" if t.save_steps else "epoch", save_steps=t.save_steps or 500,
        save_total_limit=t.save_total_limit,
        bf16=placement.precision == "bf16", fp16=placement.precision == "fp16",
        use_cpu=placement.device == "cpu",
        seed=recipe.seed, data_seed=recipe.seed,
        disable_tqdm=True, log_level="error", **life.training_args(),
        remove_unused_columns=False, dataloader_num_workers=0,
        prediction_loss_only=True,  # eval reports its loss only: no eval logits are kept
        **methods.optimizer_args(recipe, placement.device), **speed_args,
    )
    recorder = callbacks.RunRecorder(run, progress, started, throughput.flops_per_token(model), rate)
    ctx = stages.StageContext(
        recipe=recipe, run=run, placement=placement, resolved=resolved, model=model, tokenizer=tok, data=data,
        args=args, packed=packed, say=rep.say,
        callbacks=[recorder, distributed.synced_control(callbacks.ControlRequests, run, life.state) if distributed.in_rank()
                   else callbacks.ControlRequests(run, life.state), callbacks.NonFiniteStop(life.state),
                   callbacks.EvaluateLastStep(), *([callbacks.LossPlot(run)] if distributed.is_main_process() else []),
                   *eval_during.callbacks(recipe, run, tok),
                   *trackers.callbacks(getattr(recipe, "report_to", []) or [], run),
                   *([callbacks.FollowCpuLoad(threads.LoadFollower(policy.threads), rep.say)] if policy.follows_load else [])],
    )
    trainer = stages.build(ctx)
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=str(life.resume_from) if life.resume_from else None)
    life.after_train()
    if has_eval and recorder.last_eval_loss is None:  # e.g. resumed from the last step's checkpoint
        trainer.evaluate()
    progress.stop()

    final: dict[str, Any] = {"train_loss": round(result.training_loss, 5)}
    if has_eval:
        final["eval_loss"] = round(recorder.last_eval_loss, 5)
    target = run.adapter if methods.final_weights_kind(recipe) == "adapter" else run.model

    def save(folder: Path) -> None:
        methods.save_pretrained(trainer.model, folder)
        tok.save_pretrained(str(folder))

    distributed.save_final(trainer, recipe, target, save, _atomic_save, tok)
    elapsed = time.time() - started
    recorder.tokens_seen = int(trainer.state.num_input_tokens_seen or 0)
    speed_now = recorder.speed()
    final.update(elapsed_s=round(elapsed, 1), tokens_seen=recorder.tokens_seen, **speed_now,
                 peak_rss_mb=round(peak_rss_mb(), 1))
    run.update_status(state="finished", ended_at=rundir.now_iso(), step=trainer.state.global_step,
                      final_metrics=final, weights=str(target))
    mfu = f", MFU {speed_now['mfu']:.1%}" if speed_now["mfu"] is not None else ""
    rep.say(f"finished in {elapsed:.0f}s at {speed_now['tokens_per_s'] or 0:.1f} tokens/s "
            f"({recorder.clock.tokens(recorder.tokens_seen)} tokens in {speed_now['train_s']:.1f}s of training{mfu}): "
            f"train loss {final['train_loss']}"
            + (f", eval loss {final['eval_loss']}" if has_eval else "") + f"; weights in {target}")
    # Hand back the bare model: accelerate wraps forward() in autocast during mixed-precision training.
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False), tok
