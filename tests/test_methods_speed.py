"""Length-grouped batches: every example once per epoch, little padding, still random."""

from __future__ import annotations

import random

from tuneforge.runner.recipe import recipe_from_dict
from tuneforge.runner.speed import LengthGroupedBatches, trainer_args, trainer_class


def _padding(order, lengths, batch):
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / computed


def test_grouped_batches_cover_every_example_with_little_padding_and_stay_random():
    rng = random.Random(1)
    lengths = [rng.choice([50, 55, 60]) for _ in range(60)] + [rng.randint(80, 512) for _ in range(40)]
    sampler = LengthGroupedBatches(lengths, batch_size=4, seed=42)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(100))
    assert first != second  # a new order every epoch
    shuffled = list(range(100))
    rng.shuffle(shuffled)
    assert _padding(first, lengths, 4) < 0.1 < 0.3 < _padding(shuffled, lengths, 4)
    assert list(LengthGroupedBatches(lengths, 4, 42)) == first  # reproducible from the seed


def test_group_by_length_is_the_default_and_can_be_turned_off():
    base = {"data": {"train": [{"path": "x.jsonl"}]}}
    on = recipe_from_dict(base)
    assert on.speed.group_by_length and trainer_class(on).__name__ == "GroupedTrainer"
    off = recipe_from_dict(base, ["speed.group_by_length=false"])
    assert trainer_class(off).__name__ == "Trainer"
    assert trainer_args(on, True)["gradient_checkpointing"] is True
