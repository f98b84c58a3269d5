"""Linformer reference implementations (Wang et al. 2020): projection of keys and values along the
sequence axis, then ordinary softmax attention against the k projected positions.

Computed in float32 (float64 for float64 inputs) and returned in the input dtype.
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # 32-bit integer hash on int64 tensors holding values in [0, 2^32); every product stays
    # below 2^63 because the multipliers are below 2^31. Same as mix32 in csrc/linformer/linformer.h.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK32
    return x ^ (x >> 16)


def dropout_keep(seed: int, B: int, H: int, n: int, k: int, p: float, device=None) -> torch.Tensor:
    """The (B, H, n, k) bool keep-mask of attention dropout with probability ``p`` for ``seed``.

    A counter-based draw: score (row, j) with row = (b * H + h) * n + i is kept when
    ``mix32(mix32(seed + row) + j) >> 8 >= round(p * 2^24)`` (all arithmetic mod 2^32), so every
    backend and the backward pass draw the same mask from the seed alone.
    """
    row = torch.arange(B * H * n, device=device, dtype=torch.int64).view(B, H, n, 1) & _MASK32
    col = torch.arange(k, device=device, dtype=torch.int64)
    h = _mix32(((_mix32((seed + row) & _MASK32)) + col) & _MASK32)
    return (h >> 8) >= round(p * 2**24)


def linformer_project(x: torch.Tensor, E: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``Eᵀ x`` along the sequence axis: x (B, H, n, d) or (B, n, d), E (n_max, k) shared by the
    heads or (H, n_max, k) per head, only the first n rows of E used. Rows where
    ``key_padding_mask`` (B, n) is True are zeroed first. Returns (B, H, k, d), or (B, k, d) for a
    3-D x with a shared E."""
    n = x.shape[-2]
    E = E[..., :n, :].to(_opmath(x))
    xf = x.to(_opmath(x))
    if key_padding_mask is not None:
        xf = xf.masked_fill(key_padding_mask.view(x.shape[0], *([1] * (x.dim() - 3)), n, 1), 0.0)
    if E.dim() == 2:
        out = torch.einsum("...nd,nk->...kd", xf, E)
    elif x.dim() == 4:
        out = torch.einsum("bhnd,hnk->bhkd", xf, E)
    else:
        out = torch.einsum("bnd,hnk->bhkd", xf, E)
    return out.to(x.dtype)


def linformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    E: torch.Tensor,
    F: torch.Tensor | None = None,
    *,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """``softmax(q (Eᵀ k)ᵀ · scale) (Fᵀ v)`` per head; q (B, H, n_q, d), k and v (B, H or 1, n, d),
    E and F (n_max, k) or (H, n_max, k), ``F=None`` means F = E. ``dropout_p`` drops attention
    probabilities with the counter-based mask of :func:`dropout_keep` for ``seed`` (drawn from
    torch's default generator when None), scaling the kept ones by 1 / (1 - p)."""
    F = E if F is None else F
    opmath = _opmath(q)
    kp = linformer_project(k, E, key_padding_mask).to(opmath)
    vp = linformer_project(v, F, key_padding_mask).to(opmath)
    B, H, n, d = q.shape
    kp, vp = kp.expand(B, H, *kp.shape[2:]), vp.expand(B, H, *vp.shape[2:])
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = torch.einsum("bhid,bhjd->bhij", q.to(opmath), kp) * scale
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        if seed is None:
            seed = draw_seed()
        keep = dropout_keep(seed, B, H, n, kp.shape[2], dropout_p, q.device)
        probs = probs * keep / (1.0 - dropout_p) if dropout_p < 1 else probs * 0.0
    return torch.einsum("bhij,bhjd->bhid", probs, vp).to(q.dtype)


def draw_seed() -> int:
    """A dropout seed from torch's default (CPU) generator, so ``torch.manual_seed`` makes runs
    reproducible."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
