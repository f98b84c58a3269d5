"""Checks of the ADA ops for ``python -m pyops`` (small random inputs, every backend)."""

from __future__ import annotations

import torch

from pyops import _selfcheck
from pyops.ada.functional import geometric_color
from pyops.reference import ada as _ref


def _selfcheck_params(x: torch.Tensor):
    # fixed, general parameters (rotation, anisotropic scale, shift; a full colour matrix) in
    # x's dtype, so the check differentiates with respect to the images only
    dt = x.dtype
    theta = torch.tensor([0.3, -1.1], dtype=dt)
    G = torch.eye(3, dtype=dt).repeat(2, 1, 1)
    G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1] = theta.cos() * 1.2, -theta.sin(), theta.sin(), theta.cos() * 0.9
    G[:, 0, 2] = torch.tensor([0.7, -1.3], dtype=dt)
    C = torch.eye(4, dtype=dt).repeat(2, 1, 1) + 0.1 * torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dt)
    return G.to(x.device), C.to(x.device)


def _selfcheck_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    return (torch.randn(2, 3, 4, 4, generator=gen, dtype=dtype).to(device),)  # tiny: the Triton interpreter is slow


_selfcheck.register(
    _selfcheck.OpCheck(
        name="ada_geom_color",
        make_inputs=_selfcheck_inputs,
        run=lambda x, backend: geometric_color(x, *_selfcheck_params(x), backend=backend),
        reference=lambda x: _ref.color(_ref.geometric(x, _selfcheck_params(x)[0]), _selfcheck_params(x)[1]),
    )
)
