#!/usr/bin/env python3
"""Preference stages: tuneforge's DPO and reward model against plain TRL (DPOTrainer, RewardTrainer).

Same model (the embedded SmolLM2-135M-Instruct through the runner's loader), same LoRA (r16,
alpha 32, dropout 0, q/k/v/o + MLP projections), same rows (a subset of dpo_en_demo.json tokenized
once by tuneforge, so both sides train on identical token ids), same batch, steps, learning rate
and seed; TRL's defaults otherwise (its gradient checkpointing on, bf16 autocast where native,
padded [chosen; rejected] batches, its fused head on every position). Each configuration runs in
its own subprocess (its own peak RSS), interleaved (a, b, c, then c, b, a, ...), medians of the
repeats.

  tuneforge  -- `train()` with stage dpo / rm (reference kind base: the adapter switched off)
  trl        -- DPOTrainer / RewardTrainer on the same LoRA model (peft: reference = adapter off)
  trl+ref    -- DPOTrainer with a separate frozen reference model copy (TRL's full-model set-up)

The only change to TRL is that its `_prepare_dataset` returns the already-tokenized rows as they
are (it would re-tokenize text). Reward accuracy is measured the same way for every side after
training, on held-out pairs: DPO's implicit reward (policy minus reference log-probs) or the
reward model's score, chosen above rejected.

Run:  python scripts/bench_stages.py [--quick] [--repeats 3] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
LORA = {"r": 16, "alpha": 32, "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
KINDS = {"dpo": ("tuneforge", "trl", "trl+ref"), "rm": ("tuneforge", "trl")}


def recipe_dict(args, work: Path, stage: str) -> dict:
    rows = json.loads((DATA / "dpo_en_demo.json").read_text(encoding="utf-8"))
    (work / "train.json").write_text(json.dumps(rows[:args.pairs]), encoding="utf-8")
    (work / "held.json").write_text(json.dumps(rows[-args.held:]), encoding="utf-8")
    return {"name": f"bench-{stage}", "stage": stage, "seed": 42, "model": {"name_or_path": "smollm2-135m"},
            "lora": LORA, "data": {"train": [{"path": str(work / "train.json")}], "max_length": args.max_length,
                                   "truncation": "keep_end", "on_bad_rows": "skip"},
            "train": {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                      "logging_steps": 5, "warmup_ratio": 0.0, "save_steps": 10_000},
            "output": {"runs_dir": str(work / "runs"), "overwrite": True}}


def prepared(args, work: Path, stage: str):
    """(recipe, tokenizer, train rows, held-out rows) exactly as tuneforge's training reads them."""
    from tuneforge.runner import model as model_mod
    from tuneforge.runner.data import tokenize_for
    from tuneforge.runner.data.template import resolve_chat_template
    from tuneforge.runner.recipe import DataSpec, recipe_from_dict

    recipe = recipe_from_dict(recipe_dict(args, work, stage))
    tok = model_mod.load_tokenizer(model_mod.resolve("smollm2-135m"))
    tok.chat_template = resolve_chat_template(tok, "auto")[0]
    train = tokenize_for(recipe.data, tok, tok.chat_template, recipe.seed, stage="dpo").train
    held_spec = DataSpec(train=[{"path": str(work / "held.json")}], max_length=args.max_length, truncation="keep_end",
                         on_bad_rows="skip", cache=False)
    held = [t for t in tokenize_for(held_spec, tok, tok.chat_template, 0, stage="dpo").train if not t.truncated]
    return recipe, tok, train, held


def heldout_accuracy(model, held, stage: str) -> float:
    """Share of held-out pairs whose chosen reply gets the higher reward (same code for every side)."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from tuneforge.runner.stages import logps, rows

    if not held:
        return float("nan")  # no held-out pair fits max_length (e.g. --quick)
    model.eval()
    wins = 0
    with torch.no_grad():
        for t in held:
            if stage == "rm":
                cols = rows.reward_columns([t])
                s = [model(input_ids=torch.tensor([cols[k][0]])).logits[0, 0].item() for k in ("chosen_ids", "rejected_ids")]
                wins += s[0] > s[1]
                continue
            cols = rows.pair_columns([t])
            b = DataCollatorForPreference(pad_token_id=0)([{k: cols[k][0] for k in cols}])
            labels = b["input_ids"].masked_fill(b["completion_mask"] == 0, -100)

            def seq():
                out = logps.response_log_probs(logps.bare(model), b["input_ids"], b["attention_mask"], labels, packed=False)
                return out.log_probs.sum(1)

            policy = seq()
            with model.disable_adapter():
                ref = seq()
            d = policy - ref
            wins += bool(d[0] > d[1])
    return wins / len(held)


def child_tuneforge(args, work: Path, stage: str) -> dict:
    from tuneforge.runner.train import train

    recipe, _, _, held = prepared(args, work, stage)
    res = train(recipe, progress_mode="plain", plain_every=3600)
    fm = json.loads(res.run.status.read_text())["final_metrics"]
    return {"real": fm["tokens_seen"], "train_s": fm["train_s"], "loss": fm["train_loss"],
            "accuracy": heldout_accuracy(res.model, held, stage)}


def child_trl(args, work: Path, stage: str, separate_ref: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from tuneforge.runner import model as model_mod
    from tuneforge.runner.stages import rows

    recipe, tok, train, held = prepared(args, work, stage)
    set_seed(42)
    resolved = model_mod.resolve("smollm2-135m")
    common = dict(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                  learning_rate=args.lr, warmup_steps=0, logging_steps=5, save_strategy="no", report_to="none",
                  seed=42, use_cpu=True, max_length=None, remove_unused_columns=False,
                  include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    lora = dict(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=LORA["target_modules"])
    if stage == "rm":
        from trl import RewardConfig, RewardTrainer

        model = model_mod.load_model(resolved, "fp32", task="reward")
        model = get_peft_model(model, LoraConfig(**lora, task_type="SEQ_CLS", modules_to_save=["score"]))
        trainer = RewardTrainer(model=model, args=RewardConfig(**common), processing_class=tok,
                                train_dataset=Dataset.from_dict(rows.reward_columns(train)))
    else:
        from trl import DPOConfig, DPOTrainer

        class PlainDPO(DPOTrainer):
            def _prepare_dataset(self, dataset, *a, **k):
                return dataset  # the same tokenized rows as tuneforge's

        model = get_peft_model(model_mod.load_model(resolved, "fp32"), LoraConfig(**lora, task_type="CAUSAL_LM"))
        ref = model_mod.load_model(resolved, "fp32").eval() if separate_ref else None
        trainer = PlainDPO(model=model, ref_model=ref, args=DPOConfig(**common), processing_class=tok,
                           train_dataset=Dataset.from_dict(rows.pair_columns(train)))
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    torch.set_grad_enabled(True)
    return {"real": int(trainer.state.num_input_tokens_seen), "train_s": seconds, "loss": round(result.training_loss, 5),
            "accuracy": heldout_accuracy(trainer.accelerator.unwrap_model(trainer.model), held, stage)}


def run_child(stage: str, kind: str, args, work: Path) -> dict:
    from bench_machine import child_result

    cmd = [sys.executable, __file__, "--child", f"{stage}:{kind}", "--work", str(work), "--pairs", str(args.pairs),
           "--held", str(args.held), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--lr", str(args.lr)]
    t0 = time.time()
    out = child_result(subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}),
                       f"{stage} {kind}")
    print(f"  {stage} {kind}: {out['real'] / out['train_s']:.0f} real tok/s, peak RSS {out['peak_rss_mb']:.0f} MB, "
          f"loss {out['loss']}, held-out accuracy {out['accuracy']:.2f} ({time.time() - t0:.0f}s)", flush=True)
    return out


def table(results: dict, stage: str) -> str:
    med = {k: {f: statistics.median(r[f] for r in rs) for f in ("loss", "accuracy", "peak_rss_mb")}
           | {"tps": statistics.median(r["real"] / r["train_s"] for r in rs)} for k, rs in results[stage].items() if rs}
    base = med["trl"]["tps"]
    ref_rss = med.get("trl+ref", med["trl"])["peak_rss_mb"]
    lines = [f"| {stage} | real tokens/s | vs TRL | peak RSS | vs TRL{'+ref' if 'trl+ref' in med else ''} | "
             "final train loss | held-out reward accuracy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, m in med.items():
        lines.append(f"| {kind} | {m['tps']:.0f} | {m['tps'] / base:.2f}x | {m['peak_rss_mb']:.0f} MB | "
                     f"{m['peak_rss_mb'] / ref_rss:.2f}x | {m['loss']:.4f} | {m['accuracy']:.2f} |")
    return "\n".join(lines)


def write_section(path: Path, text: str, cmd: str, args, machine: str) -> None:
    body = f"""## Preference stages

{machine}. Embedded SmolLM2-135M-Instruct, LoRA r16/alpha32 on all projections, the first
{args.pairs} rows of dpo_en_demo.json (cut-off {args.max_length}, prompt cut from the left), batch {args.batch_size} pairs,
{args.steps} steps, lr {args.lr:g}; held-out accuracy on the last {args.held} rows. Medians of {args.repeats} interleaved round(s),
each configuration in its own process.

{text}

- real tokens/s counts non-pad tokens of chosen and rejected rows (prompt included, once per row).
- trl+ref: DPOTrainer with a separate frozen reference copy, the memory baseline of the target
  (tuneforge's peak RSS <= 0.7x of it).
- TRL runs with its defaults beyond model, LoRA, rows, batch, steps and learning rate (gradient
  checkpointing on, padded batches, its fused head on every position on CPU).

Reproduce: `{cmd}`
"""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = old.find("## Preference stages")
    if start < 0:
        path.write_text(old.rstrip() + "\n\n" + body, encoding="utf-8")
        return
    end = old.find("\n## ", start + 5)
    rest = old[end + 1:] if end >= 0 else ""
    path.write_text(old[:start] + body + ("\n" + rest if rest else ""), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--held", type=int, default=40)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", default="dpo,rm")
    ap.add_argument("--quick", action="store_true", help="a tiny form that only proves the benchmark runs")
    ap.add_argument("--write", help="write the tables into this markdown file under '## Preference stages'")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.quick:
        args.pairs, args.held, args.steps, args.batch_size, args.max_length, args.repeats = 12, 6, 2, 2, 256, 1
    if args.child:
        stage, kind = args.child.split(":")
        work = Path(args.work)
        out = (child_tuneforge(args, work, stage) if kind == "tuneforge"
               else child_trl(args, work, stage, separate_ref=kind == "trl+ref"))
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out), flush=True)
        return
    from bench_machine import describe

    import torch

    from tuneforge.runner.device import cpu_supports_bf16

    machine = describe("bf16" if cpu_supports_bf16() else "fp32", f"{torch.get_num_threads()} torch threads")
    print(machine, flush=True)
    stages = args.stages.split(",")
    results = {s: {k: [] for k in KINDS[s]} for s in stages}
    with tempfile.TemporaryDirectory(prefix="tf-bench-stages-") as tmp:
        for i in range(args.repeats):
            for stage in stages:
                order = list(KINDS[stage]) if i % 2 == 0 else list(reversed(KINDS[stage]))
                for kind in order:
                    results[stage][kind].append(run_child(stage, kind, args, Path(tmp)))
    text = "\n\n".join(table(results, s) for s in stages)
    print(text)
    if args.write:
        write_section(Path(args.write), text, "python scripts/bench_stages.py " + " ".join(sys.argv[1:]), args, machine)


if __name__ == "__main__":
    main()
