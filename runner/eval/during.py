"""The recipe's `eval:` block inside training: scores every N steps (a TrainerCallback) and a full
evaluation when training ends, with the model still in memory (nothing is loaded twice).

Points scored during training go to runs/<name>/eval/during_training.jsonl (`tuneforge plot`
draws them on the loss curve); the evaluation at the end is an ordinary eval/<timestamp>/ folder.
An eval that fails is logged and leaves the finished run as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from ..rundir import RunDir
from . import results

log = logging.getLogger("tuneforge")


def eval_paths(recipe) -> list[str]:
    """The eval block's data, or else the recipe's own eval files."""
    return list(recipe.eval.data) or [s.path for s in recipe.data.eval if s.path]


def callbacks(recipe, run: RunDir, tokenizer) -> list:
    """[EvalEvery] when eval.every_steps is set and there is eval data, else []."""
    if not recipe.eval.every_steps:
        return []
    paths = eval_paths(recipe)
    if not paths:
        log.warning("eval.every_steps is set but there is no eval data (eval.data or data.eval): skipped")
        return []
    return [_every_class()(recipe, run, tokenizer, paths)]


def _every_class():
    from transformers import TrainerCallback

    class EvalEvery(TrainerCallback):
        """Every N optimizer steps: loss (and generation scores when listed) of the model being trained."""

        def __init__(self, recipe, run, tokenizer, paths):
            from . import items, loss

            self.spec, self.run, self.tok = recipe.eval, run, tokenizer
            self.items = items.read_items(paths, recipe.eval.max_samples)
            self.chat = loss.chat_tokenizer(tokenizer, recipe.data.model_dump())
            self.rows = {p: loss.tokenize(its, self.chat) for p, its in self.items.items()}

        def on_step_end(self, args, state, control_, model=None, **kw):
            if model is None or state.global_step % self.spec.every_steps or not state.is_world_process_zero:
                return
            point = score_in_training(model, self.tok, self.spec, self.items, self.rows, state.global_step)
            path = results.eval_root(self.run.path) / results.DURING
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(point) + "\n")

    return EvalEvery


def score_in_training(model, tok, spec, items, rows, step: int) -> dict:
    """One point: {step, loss, [bleu4, rougeL, exact_match]} over all eval files together."""
    import torch

    from . import loss, metrics

    device = next(model.parameters()).device.type
    was_training = model.training
    model.eval()
    try:
        per = [r for p in rows for r in loss.row_losses(model, rows[p], spec.batch_size, device)]
        point = {"step": step, "loss": loss.summarize(per)["loss"], "time": time.time()}
        if "generate" in spec.modes:
            from . import generate as gen

            its = [it for p in items for it in items[p] if it.reference is not None]
            if its:
                cache = getattr(model.config, "use_cache", True)
                model.config.use_cache = True
                try:
                    preds = gen.generate(model, tok, [gen.prompt_ids(tok, it.prompt) for it in its],
                                         spec.max_new_tokens, spec.batch_size, device)
                finally:
                    model.config.use_cache = cache
                scores = metrics.generation_scores(preds, [it.reference for it in its])
                point.update({k: scores[k].value() for k in ("bleu4", "rougeL", "exact_match")})
    finally:
        model.train(was_training)
        torch.set_grad_enabled(True)
    return point


def after_training(recipe, run: RunDir, model, tokenizer, say) -> Path | None:
    """eval.during_training 'end': evaluate the finished run with the model in memory; never raises."""
    if recipe.eval.during_training != "end" or int(os.environ.get("RANK", "0")) != 0:
        return None  # one evaluation per run: the first process of a distributed launch does it
    from . import session

    spec, paths = recipe.eval, eval_paths(recipe)
    if not paths:
        modes = [m for m in spec.modes if m == "bench"]
        if not modes:
            say("eval after training skipped: no eval data (eval.data or data.eval)")
            return None
        spec = spec.model_copy(update={"modes": modes})
    try:
        p = session.plan(str(run.path), spec, paths or None)
        device = next(model.parameters()).device.type
        views = [session.View("tuned", model, tokenizer, device)]
        if recipe.eval.base and hasattr(model, "disable_adapter"):
            views.append(session.View("base", model, tokenizer, device, adapter_off=True))
        elif recipe.eval.base:
            views = None  # a full fine-tune: session loads the run and its base from disk
        model.eval()
        doc = session.run(p, say, views)
        say(f"eval: {doc.get('headline', '')} (results in {p.out})")
        return p.out
    except Exception as exc:  # noqa: BLE001 - the run itself finished; the eval is extra
        log.warning("eval after training failed: %s", exc)
        say(f"eval after training failed: {exc}")
        return None
