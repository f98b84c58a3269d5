"""Helpers shared by the benchmark suites."""

import pytest
import torch


def pick_impl(device: str, candidates: list, impl: int):
    """The ``impl``-th (name, role, fn) of ``candidates``, or skip the case when it cannot run here."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if impl >= len(candidates):
        pytest.skip("no such implementation on this device")
    return candidates[impl]
