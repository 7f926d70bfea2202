"""Data preparation speed: rows/s tokenized *and masked* by tuneforge vs a plain
`datasets.map` + `apply_chat_template` baseline (tokenized, no masks), same data, same run.

    python scripts/bench_data.py [--data PATH] [--repeats 3] [--write docs/benchmarks.md]

Uses alpaca_en_demo.json and SmolLM2-135M-Instruct's tokenizer (the embedded model, offline).
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
SECTION = "## Data preparation"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BENCH_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--write", help="Replace the 'Data preparation' section of this markdown file.")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset, disable_caching
    from transformers import AutoTokenizer

    from bench_machine import describe

    from tuneforge.runner import model as model_mod
    from tuneforge.runner.data import DataReport, prepare, tokenize
    from tuneforge.runner.data.formats import Mapping, convert
    from tuneforge.runner.data.template import ChatTokenizer
    from tuneforge.runner.recipe import recipe_from_dict

    disable_caching()
    model_mod.quiet_hf()
    parallel = os.environ.get("TOKENIZERS_PARALLELISM", "unset")  # read after quiet_hf(), which may set it
    threads = "1" if parallel.lower() in ("false", "0", "off", "no") else os.environ.get("RAYON_NUM_THREADS", "all CPUs")
    tok = AutoTokenizer.from_pretrained(model_mod.resolve("smollm2-135m").path)
    rows = json.loads(Path(args.data).read_text(encoding="utf-8"))
    n = len(rows)

    def baseline():
        def fn(row):
            prompt = row["instruction"] + ("\n" + row["input"] if row["input"].strip() else "")
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
            return {"input_ids": tok.apply_chat_template(msgs, tokenize=True)["input_ids"]}

        Dataset.from_list(rows).map(fn, remove_columns=list(rows[0]), keep_in_memory=True)

    def ours():
        report = DataReport()
        exs = [convert(r, Mapping("alpaca")) for r in rows]
        out = tokenize(exs, ChatTokenizer(tok, tok.chat_template, args.max_length), report)
        assert len(out) == n and report.bad_count == 0

    with tempfile.TemporaryDirectory() as cache:
        os.environ["TUNEFORGE_CACHE"] = cache
        spec = recipe_from_dict({"data": {"train": [{"path": args.data}], "max_length": args.max_length}}).data
        prepare(spec, tok, tok.chat_template, 0)  # fill the cache

        def cached():
            assert prepare(spec, tok, tok.chat_template, 0).cache_hit

        t_base = best_of(baseline, args.repeats)
        t_ours = best_of(ours, args.repeats)
        t_hit = best_of(cached, args.repeats)

    table = [
        "| pipeline | what it produces | rows/s |",
        "|---|---|---:|",
        f"| `datasets.map` + `apply_chat_template(tokenize=True)` (baseline) | input_ids | {n / t_base:,.0f} |",
        f"| tuneforge `ChatTokenizer` (convert + validate + render + batched tokenize + exact masks) | input_ids + labels | {n / t_ours:,.0f} |",
        f"| tuneforge `prepare()` from the tokenized-data cache (hit) | input_ids + labels + report | {n / t_hit:,.0f} |",
    ]
    text = "\n".join([
        SECTION, "",
        f"{n} rows of `{Path(args.data).name}`, SmolLM2-135M-Instruct's tokenizer and chat template, best of "
        f"{args.repeats}; {describe('n/a (tokenizing only)', f'tokenizer threads: {threads} (TOKENIZERS_PARALLELISM={parallel})')}, "
        f"Python {platform.python_version()}.", "",
        *table, "",
        f"tuneforge / baseline: {t_base / t_ours:.2f}x (while also building exact loss masks).", "",
        "Reproduce: `python scripts/bench_data.py --data ../shared/data/alpaca_en_demo.json --write docs/benchmarks.md`", "",
    ])
    print(text)
    if args.write:
        from bench_machine import replace_section

        replace_section(args.write, SECTION, text)
    return 0 if t_ours <= t_base else 1


if __name__ == "__main__":
    sys.exit(main())
