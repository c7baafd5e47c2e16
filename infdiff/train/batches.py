"""Deterministic, resumable batch order shared by every process.

Global step ``s`` of a run draws its batch from epoch ``e = s // B_e`` (``B_e`` full batches an
epoch), whose order is ``randperm(N)`` seeded by ``(seed, e)``; process ``r`` of ``W`` takes
every ``W``-th index of that global batch.  The batch at any step is a pure function of
``(seed, step)``, so a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from infdiff.train.config import ConfigError
from infdiff.train.rng import mixed_seed


def check_batches(num_samples: int, batch_size: int, world_size: int = 1, examples: str = "examples") -> None:
    """Raise a :class:`ConfigError` unless ``batch_size`` splits over the processes and one batch fits the data."""
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} must be divisible by the {world_size} processes")
    if num_samples < batch_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is more than the {num_samples} training {examples}; "
            "lower train.batch_size or train on more data"
        )


def batch_indices(
    num_samples: int, batch_size: int, seed: int, step: int, rank: int = 0, world_size: int = 1
) -> List[int]:
    """Dataset indices of this process's share of the global batch at ``step``."""
    per_epoch = num_samples // batch_size
    if per_epoch == 0:
        raise ValueError(f"the data set has {num_samples} samples, fewer than one batch of {batch_size}")
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(mixed_seed(seed, epoch))
    order = torch.randperm(num_samples, generator=generator)
    batch = order[position * batch_size : (position + 1) * batch_size]
    return batch[rank::world_size].tolist()


class ResumableBatchOrder(Sampler[List[int]]):
    """Endless batches of :func:`batch_indices` from ``start_step`` on (for a ``DataLoader``)."""

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ):
        check_batches(num_samples, batch_size, world_size)
        self.args = (num_samples, batch_size, seed)
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def __iter__(self) -> Iterator[List[int]]:
        step = self.start_step
        while True:
            yield batch_indices(*self.args, step, self.rank, self.world_size)
            step += 1


def dataset_batches(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    start_step: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A ``DataLoader`` yielding this process's batches from ``start_step`` on.

    Worker seeds come from a dedicated generator, so creating the loader does not consume the
    global RNG whose state a checkpoint restores.
    """
    order = ResumableBatchOrder(len(dataset), batch_size, seed, start_step, rank, world_size)
    return DataLoader(
        dataset,
        batch_sampler=order,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def tensor_batches(
    data: torch.Tensor, batch_size: int, seed: int, start_step: int, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """The same batches drawn directly from an in-memory tensor (e.g. cached latents)."""
    for indices in ResumableBatchOrder(len(data), batch_size, seed, start_step, rank, world_size):
        yield data[indices]
