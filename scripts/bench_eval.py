"""Eval generation speed: tuneforge's batched, left-padded, KV-cached generation (plus BLEU/ROUGE/exact
match scoring) vs a plain loop of `model.generate` one row at a time, same model, same greedy
settings, in one run; the outputs must be identical.

    python scripts/bench_eval.py [--rows 200] [--max-new-tokens 64] [--batch-size 16] [--write docs/benchmarks.md]
    python scripts/bench_eval.py --quick      # 16 rows, 16 new tokens: checks that it runs

Uses alpaca_en_demo.json and the embedded SmolLM2-135M-Instruct (offline), fp32 as eval runs on CPU.
Exit 1 when the outputs differ or (full run) tuneforge is under 3x the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"
SECTION = "## Evaluation (generation)"
TARGET = 3.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BENCH_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="16 rows, 16 new tokens (a check that it runs).")
    ap.add_argument("--write", help="Replace the 'Evaluation (generation)' section of this markdown file.")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.max_new_tokens = 16, 16

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tuneforge.runner import threads

    policy = threads.apply()
    import torch

    from bench_machine import describe

    from tuneforge.runner import chat
    from tuneforge.runner.eval import generate as gen
    from tuneforge.runner.eval import metrics
    from tuneforge.runner.eval.items import read_items

    rows = json.loads(Path(args.data).read_text(encoding="utf-8"))[: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
        items = next(iter(read_items([str(path)]).values()))
    engine = chat.load("smollm2-135m", warmup=False)
    model, tok = engine.model, engine.tokenizer
    prompts = [gen.prompt_ids(tok, it.prompt) for it in items]
    refs = [it.reference for it in items]
    kwargs = gen.greedy_kwargs(tok, args.max_new_tokens)
    with torch.inference_mode():
        model.generate(input_ids=torch.tensor([prompts[0]]), **{**kwargs, "max_new_tokens": 2})  # warm-up

    t0 = time.perf_counter()
    plain = []
    with torch.inference_mode():
        for p in prompts:
            out = model.generate(input_ids=torch.tensor([p]), **kwargs)
            plain.append(tok.decode(out[0, len(p):], skip_special_tokens=True).strip())
    t_plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = gen.generate(model, tok, prompts, args.max_new_tokens, args.batch_size)
    scores = metrics.generation_scores(ours, refs)
    t_ours = time.perf_counter() - t0

    same = sum(a == b for a, b in zip(ours, plain))
    n = len(prompts)
    speedup = t_plain / t_ours
    where = describe("fp32", f"{policy.threads} torch threads")
    text = "\n".join([
        SECTION, "",
        f"{n} rows of `{Path(args.data).name}`, embedded SmolLM2-135M-Instruct, greedy, at most {args.max_new_tokens} new "
        f"tokens; {where}; Python {platform.python_version()}, torch {torch.__version__}.", "",
        "| path | rows/s |", "|---|---:|",
        f"| plain loop: `model.generate` one row at a time | {n / t_plain:.2f} |",
        f"| tuneforge eval: batches of {args.batch_size}, left padding, KV cache, sorted by length (+ BLEU/ROUGE/EM scoring) | {n / t_ours:.2f} |",
        "",
        f"tuneforge / plain loop: **{speedup:.2f}x** (target >= {TARGET:.0f}x); identical greedy outputs: {same}/{n}; "
        f"BLEU-4 {scores['bleu4'].value():.2f}, ROUGE-L {scores['rougeL'].value():.2f}.", "",
        "Reproduce: `python scripts/bench_eval.py --write docs/benchmarks.md`", "",
    ])
    print(text)
    for i, (a, b) in enumerate(zip(ours, plain)):
        if a != b:
            print(f"row {i} differs:\n  batched: {a!r}\n  plain:   {b!r}", file=sys.stderr)
    if args.write:
        from bench_machine import replace_section

        replace_section(args.write, SECTION, text)
    ok = same == n and (args.quick or speedup >= TARGET)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
