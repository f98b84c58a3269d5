"""Triton host glue of the Linformer operators: the operator-level checks (the same messages as
the C++ ops' linformer_host.h) and the launches of :mod:`pyops.kernels.linformer`.

Each ``_triton_*`` function is the Triton kernel of a pyops operator (registered in
:mod:`pyops.linformer._ops`); pyops.kernels (and triton) are imported on first use only.
"""

from __future__ import annotations

import torch

# the largest head dim of the CUDA and Triton kernels
_GPU_MAX_HEAD_DIM = 128


# ---- Triton kernels of the operators (see pyops/_registry.py) --------------------------------


def _triton_check(t: torch.Tensor, op: str) -> None:
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"pyops::{op}_triton: supports float16/bfloat16/float32, got {t.dtype}")
    if t.shape[-1] > _GPU_MAX_HEAD_DIM:
        raise ValueError(f"pyops::{op}_triton: head dims d <= {_GPU_MAX_HEAD_DIM} only, got {t.shape[-1]}")


def _check_project_op(x, E, mask) -> None:
    # the C++ ops check these in linformer_host.h; the Triton ones here, with the same messages
    if x.dim() != 4:
        raise RuntimeError(f"linformer_project: x must be a 4-D (B, H, n, d) tensor, got shape {tuple(x.shape)}")
    B, H, n, _ = x.shape
    if not ((E.dim() == 2 and E.shape[0] == n) or (E.dim() == 3 and E.shape[:2] == (H, n))):
        raise RuntimeError(f"linformer_project: E must have shape (n, k) = ({n}, k) or (H, n, k) = ({H}, {n}, k), got {tuple(E.shape)}")
    if E.dtype != x.dtype or E.device != x.device:
        raise RuntimeError(f"linformer_project: E ({E.dtype}, {E.device}) must match x ({x.dtype}, {x.device})")
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (B, n)):
        raise RuntimeError(f"linformer_project: key_padding_mask must be a (B, n) = ({B}, {n}) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    _triton_check(x, "linformer_project")


def _check_attend_op(q, kp, vp, dropout_p) -> None:
    if q.dim() != 4 or kp.dim() != 4 or kp.shape != vp.shape or kp.shape[:2] != q.shape[:2] or kp.shape[3] != q.shape[3]:
        raise RuntimeError(f"linformer_attend: q (B, H, n, d) and kp, vp (B, H, k, d) expected, got {tuple(q.shape)}, {tuple(kp.shape)}, {tuple(vp.shape)}")
    if kp.shape[2] < 1 or q.shape[3] < 1:
        raise RuntimeError(f"linformer_attend: k and d must be at least 1, got kp of shape {tuple(kp.shape)}")
    if not (kp.dtype == vp.dtype == q.dtype):
        raise RuntimeError(f"linformer_attend: q, kp, vp dtypes differ: {q.dtype}, {kp.dtype}, {vp.dtype}")
    if not 0.0 <= dropout_p <= 1.0:
        raise RuntimeError(f"linformer_attend: dropout_p must be in [0, 1], got {dropout_p}")
    _triton_check(q, "linformer_attend")


def _triton_project(x, E, mask):
    from pyops.kernels import linformer as kl

    _check_project_op(x, E, mask)
    return kl.project(x, E, mask)


def _triton_project_backward(grad, x, E, mask):
    from pyops.kernels import linformer as kl

    _check_project_op(x, E, mask)
    return kl.project_backward(grad, x, E, mask)


def _triton_attend(q, kp, vp, scale, dropout_p, seed):
    from pyops.kernels import linformer as kl

    _check_attend_op(q, kp, vp, dropout_p)
    return kl.attend(q.contiguous(), kp.contiguous(), vp.contiguous(), scale, dropout_p, seed)


def _triton_attend_backward(grad, q, kp, vp, out, lse, scale, dropout_p, seed):
    from pyops.kernels import linformer as kl

    _check_attend_op(q, kp, vp, dropout_p)
    return kl.attend_backward(
        grad.contiguous(), q.contiguous(), kp.contiguous(), vp.contiguous(), out.contiguous(),
        lse.contiguous(), scale, dropout_p, seed,
    )
