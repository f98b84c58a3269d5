"""Checks of the PointRend ops for ``python -m pyops`` (small random inputs, every backend)."""

from __future__ import annotations

import torch

from pyops import _selfcheck
from pyops import reference as _ref
from pyops.pointrend.sampling import point_sample
from pyops.pointrend.selection import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    subdivision_step,
)


def _point_sample_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    x = torch.randn(2, 5, 9, 13, generator=gen, dtype=dtype).to(device)
    # a little outside [0, 1] so the zero padding is exercised too
    coords = (torch.rand(2, 37, 2, generator=gen, dtype=dtype) * 1.2 - 0.1).to(device)
    return x, coords


def _sorted_by_x(points: torch.Tensor) -> torch.Tensor:
    return torch.gather(points, 1, points[..., 0].argsort(dim=1).unsqueeze(-1).expand(-1, -1, 2))


def _selection_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    logits = torch.randn(3, 1, 12, 10, generator=gen, dtype=dtype).to(device)
    return logits, torch.rand(3, 48, 2, generator=gen).to(device)


def _selected(select, logits, candidates, **kwargs):
    # importance 1: no random tail, so the result is the (ordered) set of chosen candidates
    return _sorted_by_x(select(logits, calculate_uncertainty, 16, 3.0, 1.0, candidates=candidates, **kwargs))


def _step_summary(up, indices):
    """Upsampled map and the sorted uncertainties of the chosen cells (tie-independent)."""
    chosen = (-up.abs()).flatten(1).gather(1, indices)
    return torch.cat([up.flatten(1), chosen.sort(dim=1).values], dim=1)


_selfcheck.register(
    _selfcheck.OpCheck(
        name="point_sample",
        make_inputs=_point_sample_inputs,
        run=lambda x, c, backend: point_sample(x, c, backend=backend),
        reference=lambda x, c: _ref.point_sample(x, c),
    )
)
_selfcheck.register(
    _selfcheck.OpCheck(
        name="uncertain_points",
        make_inputs=_selection_inputs,
        run=lambda l, c, backend: _selected(get_uncertain_point_coords_with_randomness, l, c, backend=backend),
        reference=lambda l, c: _selected(_ref.get_uncertain_point_coords_with_randomness, l, c),
        differentiable=False,
    )
)
_selfcheck.register(
    _selfcheck.OpCheck(
        name="subdivision_step",
        make_inputs=lambda device, dtype, gen: (torch.randn(4, 7, 9, generator=gen, dtype=dtype).to(device),),
        run=lambda l, backend: _step_summary(*subdivision_step(l, 50, backend=backend)[:2]),
        reference=lambda l: _step_summary(*_ref.subdivision_step(l, 50)[:2]),
        differentiable=False,
    )
)
