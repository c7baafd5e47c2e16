import random

import numpy as np
import pytest
import torch

from infdiff.train.rng import capture_rng_state, restore_rng_state


def _draws(generator):
    return {
        "python": [random.random() for _ in range(4)],
        "numpy": np.random.rand(4).tolist() + [np.random.randn()],
        "torch": torch.rand(4).tolist(),
        "generator": torch.rand(4, generator=generator).tolist(),
    }


def test_round_trip_is_exact_for_every_source():
    generator = torch.Generator().manual_seed(3)
    _draws(generator)
    state = capture_rng_state([generator])
    first = _draws(generator)
    restore_rng_state(state, [generator])
    second = _draws(generator)
    for source in first:
        assert first[source] == second[source], source
    third = _draws(generator)
    assert all(third[source] != second[source] for source in first)


def test_state_survives_a_checkpoint(tmp_path):
    from infdiff.train.checkpoint import CheckpointManager

    generator = torch.Generator().manual_seed(0)
    manager = CheckpointManager(tmp_path)
    manager.save(0, {"rng": capture_rng_state([generator])})
    first = _draws(generator)
    restore_rng_state(manager.newest_loadable()[1]["rng"], [generator])
    assert _draws(generator) == first


def test_generator_count_mismatch_is_an_error():
    state = capture_rng_state([torch.Generator()])
    with pytest.raises(ValueError, match="1 torch.Generator states but 0"):
        restore_rng_state(state)


def test_state_is_tensors_and_plain_values_so_it_loads_weights_only(tmp_path):
    generator = torch.Generator().manual_seed(1)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    torch.save(capture_rng_state([generator]), tmp_path / "rng.pt")
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    first = _draws(generator)
    restore_rng_state(state, [generator])
    assert _draws(generator) == first


def test_numpy_state_of_older_checkpoints_still_restores():
    """Checkpoints written before the state held tensors store numpy's tuple with an ndarray key."""
    generator = torch.Generator()
    state = {**capture_rng_state([generator]), "numpy": np.random.get_state()}
    first = _draws(generator)
    restore_rng_state(state, [generator])
    assert _draws(generator) == first
