"""Helpers shared by the benchmark suites."""

import pytest
import torch

MATH = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def pick_impl(device: str, candidates: list, impl: int):
    """The ``impl``-th (name, role, fn) of ``candidates``, or skip the case when it cannot run here."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if impl >= len(candidates):
        pytest.skip("no such implementation on this device")
    return candidates[impl]


def work(nbytes: float, flops: float, math: str) -> dict:
    """What a case must do at the least, whichever implementation runs it: ``nbytes`` moved to or
    from device memory, ``flops`` of arithmetic, and the math (``"bf16"``, ``"fp16"``, ``"tf32"``,
    ``"fp32"``) whose peak applies to them. summarize.py turns it into the case's floor on the card
    the run used: max(bytes / HBM bandwidth, FLOPs / peak)."""
    return dict(bytes=int(nbytes), flops=int(flops), math=math)
