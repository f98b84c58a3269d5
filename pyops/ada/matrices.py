"""Batched 3x3 (2-D homogeneous) and 4x4 (colour) matrices from per-sample values, the building
blocks of the pipeline's ``G_inv`` and ``C``."""

from __future__ import annotations

import torch


def _mat(rows, like: torch.Tensor) -> torch.Tensor:
    """Stack a nested list of scalars / (B,) tensors into (B, n, m)."""
    B = like.shape[0]
    cols = [
        [v if isinstance(v, torch.Tensor) else torch.full((B,), float(v), dtype=like.dtype, device=like.device) for v in row]
        for row in rows
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in cols], dim=-2)


def translate2d(tx, ty):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale2d(sx, sy):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotate2d(theta):
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def translate3d(tx, ty, tz):
    return _mat([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], tx)


def scale3d(sx, sy, sz):
    return _mat([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], sx)


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` (B,) about the unit ``axis`` (3,) (Rodrigues), as (B, 4, 4)."""
    vx, vy, vz = (axis[i] for i in range(3))
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _mat(
        [
            [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
            [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
            [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
            [0, 0, 0, 1],
        ],
        theta,
    )
