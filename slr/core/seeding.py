"""Independent, reproducible random streams derived from one seed.

Every consumer of randomness (the task's ``k*``, ``v*``, the initialisation, the training data, the test
batches logged during training, the final evaluation) gets its own stream, so changing how many numbers one of them draws never shifts another.
"""
from __future__ import annotations

import numpy as np
import torch

STREAMS = ("task", "init", "train", "log", "eval", "landscape")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit integer seed for ``stream``, derived from ``seed`` with numpy's ``SeedSequence``."""
    key = STREAMS.index(stream)
    state = np.random.SeedSequence([int(seed), key]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def torch_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded for ``stream``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def numpy_generator(seed: int, stream: str) -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) seeded for ``stream``."""
    return np.random.default_rng(stream_seed(seed, stream))


def numpy_from_torch(generator: torch.Generator, bit_generator=np.random.PCG64) -> np.random.Generator:
    """A numpy ``Generator`` (on ``bit_generator``, numpy's default PCG64 unless given) whose seed is drawn from
    ``generator`` (for samplers torch lacks, e.g. chi-square, and for numpy's faster normals)."""
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item()
    return np.random.Generator(bit_generator(int(seed)))
