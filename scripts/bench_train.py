#!/usr/bin/env python3
"""Training throughput: tuneforge's defaults against a LLaMA-Factory-style Trainer + peft baseline.

Same model (the embedded SmolLM2-135M-Instruct), same data (identity with placeholders + the first
rows of alpaca_en_demo, cut-off 512, tokenized once by tuneforge so both train on identical tokens
and masks), same number of examples and epochs, same held-out eval rows. Each configuration runs in
its own subprocess (so peak RSS is its own), and the configurations run interleaved (a, b, q, b, a,
...) so load from other processes on a shared machine hits them alike.

  (a) tuneforge  -- `train()` with the recipe defaults (method lora, precision auto, length-grouped
                   batches, checkpointing only if memory needs it)
  (b) baseline   -- transformers Trainer + peft like LLaMA-Factory's defaults: fp32 weights with bf16
                   autocast where the CPU has native bf16 (else fp32), gradient checkpointing on, random batches padded to their longest row,
                   LoRA rank 8 / alpha 16 / dropout 0 on all linear layers, lr 1e-4, warmup 0.1
  (q) qlora      -- tuneforge method qlora (4-bit NF4 base) with gradient checkpointing, same batch
                   (the memory-saving configuration)

Run:  python scripts/bench_train.py --examples 120 --repeats 2 [--write docs/benchmarks.md]
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
# ../shared/data beside the checkout (or beside the folder of worktrees); --data overrides
DATA = next((p for p in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data") if p.is_dir()),
            ROOT.parent / "shared" / "data")
PLACEHOLDERS = {"name": "Forge", "author": "the tuneforge team"}


def data_files(work: Path, n_identity: int, n_alpaca: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """(train dataset specs, eval dataset specs); the eval rows are alpaca rows not trained on."""
    alpaca = json.loads((DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    (work / "alpaca_train.json").write_text(json.dumps(alpaca[:n_alpaca]), encoding="utf-8")
    (work / "alpaca_eval.json").write_text(json.dumps(alpaca[-n_eval:]), encoding="utf-8")
    train = [{"path": str(DATA / "identity.json"), "placeholders": PLACEHOLDERS, "max_samples": n_identity},
             {"path": str(work / "alpaca_train.json")}]
    return train, [{"path": str(work / "alpaca_eval.json")}]


def recipe_dict(args, work: Path, kind: str) -> dict:
    train, evals = data_files(work, args.identity, args.examples, args.eval)
    d = {
        "name": f"bench-{kind}", "seed": 42,
        "data": {"train": train, "eval": evals, "max_length": args.max_length},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "logging_steps": 10},
        "output": {"runs_dir": str(work / "runs"), "overwrite": True},
    }
    if kind == "qlora":  # the memory-saving configuration: 4-bit base + checkpointing, same batch
        d["method"] = "qlora"
        d["speed"] = {"gradient_checkpointing": True}
    return d


class Counter:
    """Wraps a collator and counts computed (padded) and real tokens of the training batches."""

    def __init__(self, inner):
        self.inner, self.computed, self.real, self.active = inner, 0, 0, True

    def __call__(self, features):
        batch = self.inner(features)
        if self.active:
            self.computed += batch["input_ids"].numel()
            self.real += sum(len(f["input_ids"]) for f in features)
        return batch


def _timed_train(trainer, counter: Counter) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = trainer.train()
    counter.active = False  # evaluation batches are not training throughput
    return time.perf_counter() - t0, result.training_loss


def child_tuneforge(args, work: Path, kind: str) -> dict:
    import transformers

    from tuneforge.runner import packing
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    counter_box: dict = {}
    make = packing.collator

    def counting_collator(tok, packed):
        counter_box["c"] = Counter(make(tok, packed))
        return counter_box["c"]

    packing.collator = counting_collator
    timing: dict = {}
    orig = transformers.Trainer.train

    def timed(self, *a, **k):
        t0 = time.perf_counter()
        out = orig(self, *a, **k)
        counter_box["c"].active = False
        timing["s"] = time.perf_counter() - t0 - timing.get("eval", 0.0)
        return out

    transformers.Trainer.train = timed
    orig_eval = transformers.Trainer.evaluate

    def untimed_eval(self, *a, **k):  # eval inside train() is neither training time nor training tokens
        c, t0 = counter_box.get("c"), time.perf_counter()
        was = c.active if c else False
        if c:
            c.active = False
        try:
            return orig_eval(self, *a, **k)
        finally:
            if c:
                c.active = was
            timing["eval"] = timing.get("eval", 0.0) + (time.perf_counter() - t0 if was else 0.0)

    transformers.Trainer.evaluate = untimed_eval
    recipe = recipe_from_dict(recipe_dict(args, work, kind))
    res = train(recipe, progress_mode="plain")
    status = json.loads(res.run.status.read_text())
    fm = status["final_metrics"]
    trainable = sum(p.numel() for p in res.model.parameters() if p.requires_grad)
    c = counter_box["c"]
    from tuneforge.runner.estimate import estimate

    est = estimate(recipe, flops=1.0)
    return {"estimate_mb": est.peak_bytes / 2**20, "train_s": timing["s"], "computed": c.computed, "real": c.real, "train_loss": fm["train_loss"],
            "eval_loss": fm.get("eval_loss"), "trainable": trainable, "precision": status.get("precision")}


def child_baseline(args, work: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from tuneforge.runner import model as model_mod
    from tuneforge.runner.data import prepare
    from tuneforge.runner.device import cpu_supports_bf16
    from tuneforge.runner.data.template import resolve_chat_template
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import _to_dataset

    model_mod.quiet_hf()
    recipe = recipe_from_dict(recipe_dict(args, work, "baseline"))
    set_seed(42)
    resolved = model_mod.resolve("smollm2-135m")
    tok = model_mod.load_tokenizer(resolved)
    template, _ = resolve_chat_template(tok, "auto")
    tok.chat_template = template
    data = prepare(recipe.data, tok, template, 42)
    bf16 = cpu_supports_bf16()  # emulated bf16 would make the baseline absurdly slow: fp32 there
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)  # fp32 weights
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    targs = TrainingArguments(
        output_dir=str(work / "baseline-out"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, num_train_epochs=args.epochs, learning_rate=1e-4,
        lr_scheduler_type="cosine", warmup_steps=0.1, bf16=bf16, use_cpu=True, logging_steps=10,
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=42,
        remove_unused_columns=False, optim="adamw_torch", train_sampling_strategy="random",
    )
    counter = Counter(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    trainer = Trainer(model=model, args=targs, train_dataset=_to_dataset(data.train),
                      eval_dataset=_to_dataset(data.eval), data_collator=counter)
    seconds, train_loss = _timed_train(trainer, counter)
    eval_loss = trainer.evaluate()["eval_loss"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"train_s": seconds, "computed": counter.computed, "real": counter.real, "train_loss": round(train_loss, 5),
            "eval_loss": round(eval_loss, 5), "trainable": trainable,
            "precision": "fp32 weights + bf16 autocast" if bf16 else "fp32"}


def peak_matmul_flops(dtype: str, seconds: float = 3.0) -> float:
    """This machine's measured matmul rate in dtype ("bf16" or "fp32"): the best of a few sizes."""
    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def run_child(kind: str, args, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), "--examples", str(args.examples), "--identity", str(args.identity),
           "--eval", str(args.eval), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
           "--max-length", str(args.max_length)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    from bench_machine import child_result

    out = child_result(proc, kind)
    print(f"  {kind}: {out['real'] / out['train_s']:.0f} real tok/s, peak RSS {out['peak_rss_mb']:.0f} MB, "
          f"eval loss {out['eval_loss']} ({time.time() - t0:.0f}s)", flush=True)
    print("    " + json.dumps(out), flush=True)
    return out


LABELS = {"tuneforge": "(a) tuneforge defaults: LoRA r16", "baseline": "(b) LLaMA-Factory-style baseline: LoRA r8",
          "qlora": "(q) tuneforge QLoRA 4-bit NF4 + gradient checkpointing"}


def table(results: dict[str, list[dict]], peak: float, args) -> str:
    base = statistics.median(r["real"] / r["train_s"] for r in results["baseline"])
    rows = ["| configuration | precision | real tokens/s | vs baseline | padding | peak RSS | train loss | eval loss | MFU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lora_rss = statistics.median(r["peak_rss_mb"] for r in results["tuneforge"])
    for kind in ("tuneforge", "baseline", "qlora"):
        rs = results.get(kind)
        if not rs:
            continue
        tps = statistics.median(r["real"] / r["train_s"] for r in rs)
        pad = statistics.median(1 - r["real"] / r["computed"] for r in rs)
        rss = statistics.median(r["peak_rss_mb"] for r in rs)
        # model FLOPs per real token: forward 2N, backward through activations 2N, weight grads 2N_trainable
        n_params = rs[0]["params"]
        mfu = tps * (4 * n_params + 2 * rs[0]["trainable"]) / peak
        rss_note = f" ({rss / lora_rss:.0%} of LoRA)" if kind == "qlora" else ""
        rows.append(f"| {LABELS[kind]} | {rs[0].get('precision')} | {tps:.0f} | {tps / base:.2f}x | {pad:.1%} | {rss:.0f} MB{rss_note} | "
                    f"{statistics.median(r['train_loss'] for r in rs):.4f} | "
                    f"{statistics.median(r['eval_loss'] for r in rs):.4f} | {mfu:.1%} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=120, help="alpaca_en_demo rows added to identity.json")
    ap.add_argument("--identity", type=int, default=91, help="identity.json rows (it has 91)")
    ap.add_argument("--eval", type=int, default=32, help="held-out alpaca rows for eval loss")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of (a, b) runs, order alternating each round")
    ap.add_argument("--round-offset", type=int, default=0, help="start the alternating order at this round (1 = baseline first)")
    ap.add_argument("--no-qlora", action="store_true")
    ap.add_argument("--write", help="write the table into this markdown file under '## Training throughput'")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.child:
        work = Path(args.work)
        out = child_baseline(args, work) if args.child == "baseline" else child_tuneforge(args, work, args.child)
        from tuneforge.runner.estimate import model_shape
        from tuneforge.runner.model import resolve

        out["params"] = model_shape(resolve("smollm2-135m").path).params
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out), flush=True)
        return

    from tuneforge.runner.device import cpu_supports_bf16

    dtype = "bf16" if cpu_supports_bf16() else "fp32"  # the precision both sides compute in
    peak = peak_matmul_flops(dtype)
    print(f"measured peak {dtype} matmul rate: {peak / 1e12:.2f} TFLOP/s", flush=True)
    results: dict[str, list[dict]] = {"tuneforge": [], "baseline": [], "qlora": []}
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        work = Path(tmp)
        for i in range(args.repeats):
            order = ["tuneforge", "baseline"] if (i + args.round_offset) % 2 == 0 else ["baseline", "tuneforge"]
            if i == 0 and not args.no_qlora:
                order.append("qlora")
            for kind in order:
                results[kind].append(run_child(kind, args, work))
    text = table(results, peak, args)
    cmd = "python scripts/bench_train.py " + " ".join(sys.argv[1:])
    print(text)
    if args.write:
        write_section(Path(args.write), text, cmd, peak, args, dtype)


def write_section(path: Path, text: str, cmd: str, peak: float, args, dtype: str = "bf16") -> None:
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.machine())
    import torch

    threads = torch.get_num_threads()
    body = f"""## Training throughput

Embedded SmolLM2-135M-Instruct on {os.cpu_count()} cores of a {cpu} ({"native bf16" if dtype == "bf16" else "fp32 only, no native bf16"};
shared with other jobs), {threads} torch threads, measured peak {dtype} matmul rate {peak / 1e12:.2f} TFLOP/s. Data: the first {args.identity} rows of identity.json (placeholders filled) + the first
{args.examples} rows of alpaca_en_demo, cut-off {args.max_length}, {args.epochs:g} epoch, batch {args.batch_size};
eval loss on the last {args.eval} alpaca rows. Both sides train on identical token ids and masks.

{text}

- real tokens/s counts only non-pad tokens; padding = pad share of the tokens computed by the
  linear layers (packed batches have none; their attention still runs each batch's examples
  padded to its longest one).
- MFU = real tokens/s x (4 N + 2 N_trainable) / measured peak (gradient-checkpoint recompute not counted).
- Peak RSS per configuration, each in its own process (ru_maxrss, includes the model-loading peak).
- Runs are interleaved (a, b, q; with --repeats N then b, a, ...) and medians reported: the machine
  is shared, so absolute rates move with other load. The run above is {args.repeats} round(s).
- Baseline (b): fp32 weights + bf16 autocast (fp32 on a CPU without native bf16), gradient checkpointing on, random batches padded to
  the longest row, LoRA r8/alpha16/dropout 0, lr 1e-4, warmup 0.1 (LLaMA-Factory's defaults).
  tuneforge (a): recipe defaults -- LoRA r16/alpha32/dropout 0, lr 2e-4, warmup 0.03, frozen base
  stored in bf16, length-grouped and padding-free (packed) batches, logits only at labelled
  positions, attention chosen per batch (eager up to 256 tokens, SDPA above), no fp32 round trip
  of adapter inputs under autocast, checkpointing off because the estimate says it fits.

Reproduce: `{cmd}`
"""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = old.find("## Training throughput")
    if start < 0:
        path.write_text(old.rstrip() + "\n\n" + body, encoding="utf-8")
        return
    end = old.find("\n## ", start + 5)  # the section is replaced where it stands; later sections stay
    rest = old[end + 1:] if end >= 0 else ""
    path.write_text(old[:start] + body + ("\n" + rest if rest else ""), encoding="utf-8")


if __name__ == "__main__":
    main()
