"""Serving throughput: `tuneforge serve` (continuous batching) with 1, 4 and 8 concurrent streaming
clients vs one request at a time through plain `model.generate`, same prompts, greedy, one run.

    python scripts/bench_serve.py [--requests 16] [--max-tokens 64] [--write docs/benchmarks.md]
    python scripts/bench_serve.py --quick      # a short check that it runs (2 prompts, 8 tokens)

Uses the embedded SmolLM2-135M-Instruct (offline). Reports aggregate generated tokens/s, time to
first token p50/p95, and how many replies equal the baseline's greedy reply token for token.
Target: >= 3x the baseline's tokens/s at 8 clients, with identical outputs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
SECTION = "## Serving"
TOPICS = ["the moon", "bread", "rivers", "chess", "volcanoes", "bees", "trains", "glass", "maps", "tea", "clocks",
          "salt", "owls", "bridges", "paper", "rain"]


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(n)]


def baseline(texts: list[str], max_tokens: int) -> tuple[list[list[int]], float]:
    """Each prompt alone through model.generate, greedy: (generated ids per prompt, seconds)."""
    import torch

    from tuneforge.runner import chat

    engine = chat.load("smollm2-135m", warmup=True)
    outs, t0 = [], time.perf_counter()
    for text in texts:
        enc = engine._encode([{"role": "user", "content": text}])
        with torch.inference_mode():
            seq = engine.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, temperature=None,
                                        top_p=None, top_k=None, pad_token_id=engine.tokenizer.pad_token_id)
        outs.append(seq[0, enc["input_ids"].shape[1]:].tolist())
    return outs, time.perf_counter() - t0


def through_server(base: str, texts: list[str], max_tokens: int, clients: int):
    """(replies, ttfts, completion tokens, seconds) with `clients` concurrent streams."""
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)

    def one(text):
        sent, ttft, parts, used = time.perf_counter(), None, [], 0
        for ch in client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": text}],
                                                 max_tokens=max_tokens, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}):
            if ch.usage:
                used = ch.usage.completion_tokens
            if ch.choices and ch.choices[0].delta.content:
                ttft = ttft or time.perf_counter() - sent
                parts.append(ch.choices[0].delta.content)
        return "".join(parts), ttft or 0.0, used

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, texts))
    return [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results), time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--quick", action="store_true", help="2 prompts, 8 tokens, 1 and 2 clients: checks it runs")
    ap.add_argument("--write", help="Replace the 'Serving' section of this markdown file.")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.clients = 2, 8, "1,2"
    from bench_machine import describe
    from serve_helpers import Server
    from transformers import AutoTokenizer

    from tuneforge.runner import model as model_mod

    texts = prompts(args.requests)
    tok = AutoTokenizer.from_pretrained(model_mod.resolve("smollm2-135m").path)
    ref_ids, t_base = baseline(texts, args.max_tokens)
    ref = [tok.decode(ids, skip_special_tokens=True) for ids in ref_ids]
    base_tps = sum(len(i) for i in ref_ids) / t_base
    rows = [f"| plain `model.generate`, one request at a time (baseline) | 1 | {base_tps:.1f} | 1.00x | – | – | – |"]
    ratio_at_max = 0.0
    srv = Server("smollm2-135m")
    try:
        through_server(srv.base, texts[:1], 2, 1)  # warm-up
        for c in [int(x) for x in args.clients.split(",")]:
            replies, ttfts, used, secs = through_server(srv.base, texts, args.max_tokens, c)
            same = sum(a == b for a, b in zip(replies, ref))
            tps = used / secs
            ratio_at_max = tps / base_tps
            rows.append(f"| tuneforge serve, {c} concurrent streaming client{'s' if c > 1 else ''} | {c} | {tps:.1f} | "
                        f"{tps / base_tps:.2f}x | {pct(ttfts, 0.5):.2f} | {pct(ttfts, 0.95):.2f} | {same}/{len(texts)} |")
    finally:
        srv.stop()
    text = "\n".join([
        SECTION, "",
        f"{args.requests} chat requests, greedy, {args.max_tokens} new tokens each, SmolLM2-135M-Instruct (fp32 on CPU) "
        f"through `tuneforge serve` (transformers continuous batching, paged attention); {describe('fp32', 'threads: tuneforge policy')}.",
        "", "| how | clients | generated tokens/s | vs baseline | TTFT p50 s | TTFT p95 s | same reply as baseline |",
        "|---|---:|---:|---:|---:|---:|---:|", *rows, "",
        "Reproduce: `python scripts/bench_serve.py --write docs/benchmarks.md` (target: >= 3x at 8 clients).", "",
    ])
    print(text)
    if args.write:
        from bench_machine import replace_section

        replace_section(args.write, SECTION, text)
    print(f"RESULT {{\"ratio_at_max_clients\": {ratio_at_max:.3f}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
