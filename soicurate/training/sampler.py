"""The training-data order of the bundled trainer, governed by the data seed alone.

transformers' Trainer honours `data_seed` only for its plain random sampler (accelerate swaps
it for a seedable one); its length-grouped sampler draws from the global torch generator,
which `seed` sets, so with length grouping two runs that differ only in the data seed see
the same batches. `EpochSeededSampler` fixes that for both strategies: epoch k's order comes
from a generator seeded by (data_seed, k) alone, so it does not depend on the weight-init
seed, on dropout, or on whether the run was resumed, and every rank of a distributed run
computes the same order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_seed(data_seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch; independent streams for (seed, epoch) pairs (not seed + epoch,
    which would make run d's epoch k+1 the order of run d+1's epoch k)."""
    return int(np.random.SeedSequence([int(data_seed), int(epoch)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class EpochSeededSampler(Sampler):
    """Indices of one epoch: a random permutation, or with `lengths` the length-grouped order of
    transformers' LengthGroupedSampler (megabatches of 50 batches sorted by length), drawn
    from a generator seeded by (data_seed, epoch).

    The Trainer calls `set_epoch` before each epoch (also after a resume); if nobody does,
    each new iteration moves to the next epoch."""

    def __init__(self, num_examples: int, data_seed: int, *, lengths=None, batch_size: int | None = None):
        if lengths is not None and len(lengths) != num_examples:
            raise ValueError(f"{len(lengths)} lengths for {num_examples} examples")
        if lengths is not None and not batch_size:
            raise ValueError("length grouping needs the batch size")
        self.num_examples = int(num_examples)
        self.data_seed = int(data_seed)
        self.lengths = None if lengths is None else [int(n) for n in lengths]
        self.batch_size = batch_size
        self.epoch = 0
        self._epoch_was_set = False
        self._iterated = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_was_set = True

    def __len__(self) -> int:
        return self.num_examples

    def order(self, epoch: int) -> list[int]:
        """The example indices of `epoch` (0-based), without changing the sampler's state."""
        generator = torch.Generator().manual_seed(epoch_seed(self.data_seed, epoch))
        if self.lengths is None:
            return torch.randperm(self.num_examples, generator=generator).tolist()
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return list(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    def __iter__(self):
        if self._iterated and not self._epoch_was_set:
            self.epoch += 1
        self._iterated, self._epoch_was_set = True, False
        return iter(self.order(self.epoch))


def train_sampler(trainer, train_dataset, data_seed: int) -> EpochSeededSampler:
    """The sampler for a Trainer's training set: length-grouped when its arguments ask for it."""
    args = trainer.args
    n = len(train_dataset)
    if getattr(args, "train_sampling_strategy", "random") == "group_by_length":
        name = args.length_column_name
        if name in train_dataset.column_names:
            lengths = train_dataset[name]
        else:
            lengths = [len(ids) for ids in train_dataset["input_ids"]]
        return EpochSeededSampler(n, data_seed, lengths=lengths,
                                  batch_size=args.train_batch_size * args.gradient_accumulation_steps)  # fmt: skip
    return EpochSeededSampler(n, data_seed)


class EpochSeededSamplerMixin:
    """Put before a Trainer class: its training order then follows `args.data_seed` (else
    `args.seed`) per epoch, with or without length grouping."""

    def _get_train_sampler(self, train_dataset=None):
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if train_dataset is None or not hasattr(train_dataset, "column_names"):  # not a datasets.Dataset
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return train_sampler(self, train_dataset, seed)
