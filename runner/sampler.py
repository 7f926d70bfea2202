"""Length-grouped batches that stay random: a sampler any stage's Trainer can use.

transformers' own LengthGroupedSampler uses pools of only len/4 examples on small datasets (and
moves the longest example to the front), which leaves much of the padding in place.
"""

from __future__ import annotations


class LengthGroupedBatches:
    """Index order for length-grouped batches: each epoch, shuffle, cut into pools of 64 batches,
    sort each pool by length, cut into batches, shuffle the batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, pool_batches: int = 64):
        self.lengths, self.batch, self.seed, self.pool = list(lengths), batch_size, seed, pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The Trainer names the epoch before iterating it (also after a resume): the order is then
        the epoch's, however often the sampler was iterated before (a resumed run skips batches)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.pool * self.batch
        batches = []
        for k in range(0, len(order), size):
            pool = sorted(order[k:k + size], key=lambda i: self.lengths[i])
            batches += [pool[j:j + self.batch] for j in range(0, len(pool), self.batch)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b]
