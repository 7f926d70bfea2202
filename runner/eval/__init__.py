"""Evaluation: loss/perplexity, generation metrics and multiple-choice benchmarks, base vs tuned.

Light on import (no torch): `tuneforge runs`, the TUI and the recipe read `spec`, `results` and
`deps` from here; the modules that load models (`session`, `loss`, `generate`, `bench`) import
torch, transformers and lm-eval inside their functions.
"""
