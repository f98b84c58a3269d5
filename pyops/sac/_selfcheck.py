"""Inputs of the SAC checks: :func:`random_parameters` (also used by the tests and benchmarks)
and the ``python -m pyops`` check."""

from __future__ import annotations

import torch

from pyops import _selfcheck
from pyops import reference as _ref
from pyops.sac.conv import sac_conv2d


def random_parameters(C: int, O: int, k: int = 3, groups: int = 1, bias: bool = True, *,
                      dtype=torch.float32, device="cpu", generator: torch.Generator | None = None):
    """Random (non-initial) parameters of :func:`sac_conv2d` in argument order, for tests and
    benchmarks: a switch that varies around 0.5, a non-zero weight_diff and contexts."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0, offset=0.0):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset).to(device=device, dtype=dtype)

    fan_in = max(C // groups * k * k, 1)  # (empty channels: any scale)
    return (
        r(O, C // groups, k, k, scale=fan_in ** -0.5),
        r(O, 1, 1, 1, scale=0.2, offset=1.0),
        r(O, 1, 1, 1, scale=0.02),
        r(O, C // groups, k, k, scale=0.5 * fan_in ** -0.5),
        r(1, C, 1, 1, scale=max(C, 1) ** -0.5),
        r(1, scale=0.1, offset=0.5),
        r(C, C, 1, 1, scale=0.5 * max(C, 1) ** -0.5),
        r(C, scale=0.1),
        r(O, O, 1, 1, scale=0.5 * max(O, 1) ** -0.5),
        r(O, scale=0.1),
        r(O, scale=0.1) if bias else None,
    )


def _selfcheck_inputs(device, dtype, gen):
    x = torch.randn(2, 6, 9, 11, generator=gen, dtype=dtype).to(device)
    return (x, *random_parameters(6, 4, generator=gen, dtype=dtype, device=device)[:10])


_selfcheck.register(
    _selfcheck.OpCheck(
        name="sac_conv2d",
        make_inputs=_selfcheck_inputs,
        run=lambda *a, backend: sac_conv2d(*a, None, 2, 1, 1, backend=backend),
        reference=lambda *a: _ref.sac_conv2d(*a, None, 2, 1, 1),
    )
)
