#!/usr/bin/env python3
"""Busy-machine benchmark: training and generation alone and beside one CPU-bound process, with the
old thread policy and tuneforge's (runner/threads.py), in one run.

  old -- no policy: OpenMP's defaults (threads spin-wait at every barrier), torch's default thread
         count (one per core it sees). What training ran with before the policy.
  new -- tuneforge's policy: threads = usable CPUs (affinity, cgroup quota), fewer while other processes
         use them (threads.LoadFollower, checked between training steps and before each reply);
         OMP_WAIT_POLICY=PASSIVE only where a single thread is left.

Training: the quickstart recipe (embedded SmolLM2-135M-Instruct, LoRA, the forge identity data) for
--steps steps through tuneforge's own `train()`; real tokens/s = tokens trained / training time.
Generation: the chat engine (runner/chat.py), greedy, --replies replies of up to --chat-tokens
tokens; tokens/s = decoding speed after the first token. Every measurement runs in its own process
(OpenMP reads its settings once, at load), with OMP_*/MKL_*/RAYON_* removed from its environment;
"busy" = one `python -c "while True: pass"` runs beside it. Rounds alternate the policies' order.

Run:  python scripts/bench_busy.py --repeats 3 --write docs/benchmarks.md
Smoke test (seconds, figures meaningless):  python scripts/bench_busy.py --steps 2 --chat-tokens 8 --replies 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
HEADING = "## Busy machine"
POLICY_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "TUNEFORGE_THREADS_AUTO")
PROMPT = "Write a long, detailed essay on the history of blacksmithing, with many sections and examples."


# --- in the measuring process -------------------------------------------------------------------

def _set_policy(policy: str) -> None:
    """Before torch loads, as the CLI does. 'old' also turns tuneforge's policy off inside train()."""
    from tuneforge.runner import threads

    if policy == "new":
        threads.apply()
        return

    class NoPolicy:  # what train() and the chat engine see in place of a policy
        follows_load = False

        def as_status(self):
            return {"policy": "none"}

        def describe(self):
            return "threads: no policy (OpenMP and torch defaults)"

    threads.apply = lambda *a, **k: NoPolicy()
    threads.plan = lambda *a, **k: (NoPolicy(), {})


def _facts() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}


def measure_train(args, work: Path) -> dict:
    from tuneforge.runner.recipe import load_recipe
    from tuneforge.runner.train import train

    overrides = [f"train.max_steps={args.steps}", f"train.logging_steps={args.steps}", f"train.save_steps={10 * args.steps}",
                 f"output.runs_dir={work}", "output.overwrite=true", "name=busy-bench"]
    res = train(load_recipe(RECIPE, overrides), progress_mode="plain")
    status = json.loads(res.run.status.read_text())
    fm = status["final_metrics"]
    return {"tokens_per_s": fm["tokens_per_s"], "tokens": fm["tokens_seen"], "precision": status["precision"],
            **_facts()}


def measure_chat(args) -> dict:
    from tuneforge.runner import chat

    engine = chat.load("smollm2-135m")  # warmed up by one tiny generation
    tokens, seconds = 0, 0.0
    for _ in range(args.replies):
        engine.reply([{"role": "user", "content": PROMPT}], chat.Sampling(max_new_tokens=args.chat_tokens))
        s = engine.last_stats
        if s.first_token_at is not None and s.new_tokens > 1:
            tokens, seconds = tokens + s.new_tokens - 1, seconds + s.total_s - s.first_token_at
    dtype = str(next(engine.model.parameters()).dtype).replace("torch.", "")
    precision = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}.get(dtype, dtype)
    return {"tokens_per_s": round(tokens / seconds, 2) if seconds else None, "tokens": tokens, "precision": precision,
            **_facts()}


# --- the driver ---------------------------------------------------------------------------------

def run_one(args, workload: str, policy: str, busy: bool, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, __file__, "--measure", workload, "--policy", policy, "--work", str(work),
           "--steps", str(args.steps), "--chat-tokens", str(args.chat_tokens), "--replies", str(args.replies)]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env) if busy else None
    try:
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    from bench_machine import child_result

    out = child_result(proc, f"{workload}/{policy}/{'busy' if busy else 'alone'}")
    print(f"  {workload:5} {policy} {'busy ' if busy else 'alone'}: {out['tokens_per_s']} tokens/s "
          f"({out['torch_threads']} threads, OMP_WAIT_POLICY {out['wait_policy']}; {time.time() - t0:.0f}s)", flush=True)
    return out


def table(results: dict, args) -> tuple[str, str]:
    """(header text naming CPU, precision and threads; the markdown table)."""
    from bench_machine import describe

    threads_of = {p: sorted({r["torch_threads"] for (w, q, b), rs in results.items() if q == p for r in rs}) for p in ("old", "new")}
    precisions = sorted({r["precision"] for rs in results.values() for r in rs})
    header = describe(" / ".join(precisions), f"threads: old {'/'.join(map(str, threads_of['old']))} (torch's default, "
                      f"OpenMP spin-waiting), new {'/'.join(map(str, threads_of['new']))} (tuneforge's policy: "
                      "usable CPUs, fewer while other processes use them)")
    rows = ["| workload | policy | threads | precision | alone tokens/s | beside 1 busy process | busy / alone |",
            "|---|---|---:|---|---:|---:|---:|"]
    names = {"train": f"training (quickstart recipe, {args.steps} steps)", "chat": f"generation (chat engine, {args.chat_tokens} tokens)"}
    for workload in [w for w in ("train", "chat") if (w, "old", False) in results]:
        alone_old = None
        for policy in ("old", "new"):
            alone = statistics.median(r["tokens_per_s"] for r in results[(workload, policy, False)])
            busy = statistics.median(r["tokens_per_s"] for r in results[(workload, policy, True)])
            r0 = results[(workload, policy, False)][0]
            vs = f" ({alone / alone_old:.2f}x old)" if alone_old else ""
            rows.append(f"| {names[workload]} | {policy} | {r0['torch_threads']} | {r0['precision']} | "
                        f"{alone:.1f}{vs} | {busy:.1f} | **{busy / alone:.2f}x** |")
            alone_old = alone
    return header, "\n".join(rows)


def write_section(path: Path, header: str, text: str, cmd: str, args) -> None:
    body = f"""{HEADING}

{header}. Each figure is the median of {args.repeats} round(s); every measurement in its own process.

{text}

- busy = one `python -c "while True: pass"` running beside the measured process (one core's worth
  of other work: another user's job, preprocessing, a tokenizer in another process).
- old = no thread policy: OpenMP's defaults (threads spin at every barrier) and torch's default
  thread count, as training ran before runner/threads.py (`tuneforge chat` already set
  OMP_WAIT_POLICY=PASSIVE). new = the policy every tuneforge process now applies at start: threads =
  usable CPUs, lowered between training steps (every 2 s) and before each reply while other processes
  use those CPUs; the threads column shows the count at the start.
- training tokens/s = tokens trained / training time (tuneforge's `tokens_per_s`, docs/runs.md);
  generation tokens/s = decoding speed after the first token, greedy.
- Target on a 2-core machine: busy / alone >= 0.5x with the new policy, and new alone no slower than old.

Reproduce: `{cmd}`
"""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = old.find(HEADING + "\n")
    if start < 0:
        path.write_text(old.rstrip() + "\n\n" + body, encoding="utf-8")
        return
    end = old.find("\n## ", start + len(HEADING))  # replaced where it stands; later sections stay
    rest = old[end + 1:] if end >= 0 else ""
    path.write_text(old[:start] + body + ("\n" + rest if rest else ""), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="training steps per measurement (batch 4, quickstart recipe)")
    ap.add_argument("--chat-tokens", type=int, default=96, help="longest reply per generation")
    ap.add_argument("--replies", type=int, default=3, help="replies per generation measurement")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; the policies' order alternates each round")
    ap.add_argument("--only", choices=["train", "chat"], help="measure one workload only")
    ap.add_argument("--write", help=f"write the table into this markdown file under '{HEADING}'")
    ap.add_argument("--measure", choices=["train", "chat"], help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=["old", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.measure:
        _set_policy(args.policy)
        out = measure_train(args, Path(args.work)) if args.measure == "train" else measure_chat(args)
        print("RESULT " + json.dumps(out), flush=True)
        return

    workloads = [args.only] if args.only else ["train", "chat"]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="tf-busy-") as tmp:
        for i in range(args.repeats):
            for workload in workloads:
                for policy in (("old", "new") if i % 2 == 0 else ("new", "old")):
                    for busy in (False, True):
                        results.setdefault((workload, policy, busy), []).append(run_one(args, workload, policy, busy, Path(tmp)))
    header, text = table(results, args)
    print(header + "\n\n" + text)
    if args.write:
        write_section(Path(args.write), header, text, "python scripts/bench_busy.py " + " ".join(sys.argv[1:]), args)


if __name__ == "__main__":
    main()
