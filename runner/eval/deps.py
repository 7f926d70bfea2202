"""The optional `eval` extra: lm-eval, sacrebleu, rouge-score, jieba. Checked before any work starts."""

from __future__ import annotations

import importlib.util

from ..errors import TuneforgeError

EXTRA = "eval"
# import name -> distribution name, per mode
NEEDS = {
    "generate": {"sacrebleu": "sacrebleu", "rouge_score": "rouge-score", "jieba": "jieba"},
    "bench": {"lm_eval": "lm-eval"},
}


def missing(modes) -> list[str]:
    """Distributions the given modes need that are not installed."""
    return [dist for mode in modes for mod, dist in NEEDS.get(mode, {}).items() if importlib.util.find_spec(mod) is None]


def require(modes) -> None:
    gone = missing(modes)
    if gone:
        raise TuneforgeError(f"evaluation mode(s) {', '.join(m for m in modes if m in NEEDS)} need {', '.join(gone)}, "
                             "which is not installed",
                             f"pip install 'tuneforge[{EXTRA}]'   (or leave out those modes: --mode loss)")
