"""PointRend reference implementations (detectron2 ``point_features.py`` semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(input: torch.Tensor, coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinear samples of ``input`` (N, C, H, W) at normalized points ``coords`` (N, P, 2) or
    (N, Hg, Wg, 2), ``(x, y)`` in ``[0, 1]``; returns (N, C, P) or (N, C, Hg, Wg).

    ``F.grid_sample`` with zero padding on ``2 * coords - 1``, computed in float32 (float64 for
    float64 inputs) and returned in ``input.dtype`` (float32 for bool/uint8 masks).
    """
    opmath = torch.float64 if input.dtype == torch.float64 else torch.float32
    grid = 2.0 * coords.to(opmath) - 1.0
    if coords.dim() == 3:
        grid = grid.unsqueeze(2)
    out = F.grid_sample(
        input.to(opmath), grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners
    )
    if coords.dim() == 3:
        out = out.squeeze(3)
    return out.to(input.dtype) if input.is_floating_point() else out
