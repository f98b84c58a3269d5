"""The Linformer functions :func:`linformer_project` and :func:`linformer_attention`, with their
argument checks (the one owner of them) and dispatch budgets."""

from __future__ import annotations

import math

import torch

from pyops import _backend
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.linformer._ops import _ATTEND, _PROJECT
from pyops.linformer._triton import _GPU_MAX_HEAD_DIM
from pyops.reference import linformer as _ref

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

CAUSAL_ERROR = (
    "pyops.linformer_attention: causal=True is not supported. Linformer projects keys and values "
    "along the sequence axis (K' = Eᵀ K mixes all n positions into each of the k projected ones), "
    "so every projected key already contains future tokens and no mask over the n×k scores can "
    "make the attention causal; the paper defines no causal variant. Use exact causal attention "
    "(F.scaled_dot_product_attention(..., is_causal=True)) instead."
)


# ---- argument checks -----------------------------------------------------------------------


def _fail(op: str, msg: str, exc=ValueError):
    raise exc(f"pyops.{op}: {msg}")


def _check_tensor(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(op, f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if t.dtype not in _FLOATS:
        _fail(op, f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {t.dtype}", TypeError)


def _check_proj_matrix(op: str, name: str, E, n: int, heads: int) -> None:
    _check_tensor(op, name, E)
    if E.dim() not in (2, 3):
        _fail(op, f"{name} must have shape (n_max, k) or (H, n_max, k), got {tuple(E.shape)}")
    if E.dim() == 3 and E.shape[0] != heads:
        _fail(op, f"per-head {name} has {E.shape[0]} heads but the keys/queries have {heads}: expected shape "
                  f"({heads}, n_max, k), got {tuple(E.shape)}")
    if E.shape[-2] < n:
        _fail(op, f"{name} has n_max = {E.shape[-2]} rows but the sequence has n = {n}; "
                  f"{name} must have at least n rows (only the first n are used)")
    if E.shape[-1] < 1:
        _fail(op, f"{name} must project to k >= 1 positions, got shape {tuple(E.shape)}")


def _check_mask(op: str, mask, B: int, n: int, device) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        _fail(op, f"key_padding_mask must be a bool tensor, got {type(mask).__name__}", TypeError)
    if mask.dtype != torch.bool:
        _fail(op, f"key_padding_mask must be a bool tensor (True = padding), got {mask.dtype}", TypeError)
    if tuple(mask.shape) != (B, n):
        _fail(op, f"key_padding_mask must have shape (B, n) = ({B}, {n}), got {tuple(mask.shape)}")
    if mask.device != device:
        _fail(op, f"key_padding_mask is on {mask.device} but the keys/values (x, k, v) are on {device}")


def _check_devices(op: str, named: dict) -> None:
    devices = {name: t.device for name, t in named.items() if t is not None}
    first = next(iter(devices))
    for name, dev in devices.items():
        if dev != devices[first]:
            _fail(op, f"{first} is on {devices[first]} but {name} is on {dev}")


def _check_backend_limits(op: str, name: str, dtype: torch.dtype, d: int) -> None:
    if name == "triton" and dtype == torch.float64:
        _fail(op, "backend 'triton' supports float16/bfloat16/float32, got float64 "
                  "(use backend='cpu' or 'reference' for float64)", TypeError)
    if name in ("triton", "cuda") and d > _GPU_MAX_HEAD_DIM:
        _fail(op, f"backend {name!r} supports head dims d <= {_GPU_MAX_HEAD_DIM}, got d = {d}")


# ---- public functions ----------------------------------------------------------------------


def _project(name: str, x: torch.Tensor, E: torch.Tensor, mask) -> torch.Tensor:
    """Backend ``name`` (not reference) projection of x (B, H|1, n, d) or (B, n, d) by E."""
    n = x.shape[-2]
    E = E[..., :n, :].to(x.dtype)
    x4 = x.unsqueeze(1) if x.dim() == 3 else x
    if E.dim() == 3 and x4.shape[1] != E.shape[0]:  # one key/value head, per-head E
        x4 = x4.expand(x4.shape[0], E.shape[0], *x4.shape[2:])
    out = _PROJECT.kernel(name)(x4, E, mask)
    return out.squeeze(1) if x.dim() == 3 and E.dim() == 2 else out


@budget(forward=1, backward=1)
@accepts_arrays
def linformer_project(
    x: torch.Tensor,
    E: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Linformer's projection along the sequence axis, ``Eᵀ x`` per head.

    Args:
        x: (B, H, n, d) or (B, n, d) keys or values, float16/bfloat16/float32/float64.
        E: (n_max, k) shared by all heads, or (H, n_max, k) one per head, with n_max >= n; only
            the first n rows are used (variable-length batches). Cast to ``x.dtype``.
        key_padding_mask: optional (B, n) bool, True marks padding: those rows of x contribute
            nothing (they are zeroed before projecting).
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic).

    Returns:
        (B, H, k, d) in ``x.dtype`` ((B, k, d) for a 3-D x with a shared E; a 3-D x with a
        per-head E gives (B, H, k, d)), accumulated in float32 (float64 for float64).
        Differentiable with respect to x and E.
    """
    op = "linformer_project"
    _check_tensor(op, "x", x)
    if x.dim() not in (3, 4):
        _fail(op, f"x must be a (B, H, n, d) or (B, n, d) tensor, got shape {tuple(x.shape)}")
    heads = x.shape[1] if x.dim() == 4 else (E.shape[0] if isinstance(E, torch.Tensor) and E.dim() == 3 else 1)
    _check_proj_matrix(op, "E", E, x.shape[-2], heads)
    _check_mask(op, key_padding_mask, x.shape[0], x.shape[-2], x.device)
    _check_devices(op, {"x": x, "E": E})
    name = _backend.resolve(op, backend, x.device)
    if name == "reference":
        return _ref.linformer_project(x, E, key_padding_mask)
    _check_backend_limits(op, name, x.dtype, x.shape[-1])
    return _project(name, x, E, key_padding_mask)


@budget(forward=3, backward=5, note="two projections and the attention kernel; their backward ops and the slice of E")
@accepts_arrays
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
    causal: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Linformer attention: ``softmax(q (Eᵀ k)ᵀ · scale) (Fᵀ v)`` per head.

    Args:
        q: (B, H, n_q, d) queries.
        k, v: (B, H, n, d) keys and values, or (B, 1, n, d) for a single key/value head shared
            by all query heads (``one_kv_head``). Same dtype as q.
        E, F: (n_max, k) shared by the heads or (H, n_max, k) per head, n_max >= n (the first n
            rows are used). ``F=None`` shares E between keys and values. Cast to q's dtype.
        key_padding_mask: optional (B, n) bool, True marks padding keys/values: they contribute
            nothing to the projected K', V' (their rows are zeroed before projecting). Queries at
            padded positions still get an output; ignore it.
        dropout_p: dropout on the attention probabilities (kept ones scaled by 1/(1-p)). The mask
            comes from a seed drawn from torch's default generator (``torch.manual_seed`` makes it
            reproducible) and is recomputed, not stored, in the backward. Pass 0 outside training;
            with 0 the result is exact (no randomness).
        scale: score scale, default ``1/sqrt(d)``.
        causal: must be False: Linformer's projection mixes future positions into every projected
            key, so no causal variant exists (a clear error explains this).
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic).

    Returns:
        (B, H, n_q, d) in q's dtype; softmax and accumulations in float32 (float64 for float64).
        Differentiable with respect to q, k, v, E and F. The n×k scores are never stored.
    """
    op = "linformer_attention"
    if causal:
        raise ValueError(CAUSAL_ERROR)
    for name_, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(op, name_, t)
        if t.dim() != 4:
            _fail(op, f"{name_} must be a 4-D (B, H, n, d) tensor, got shape {tuple(t.shape)}")
    B, H, n_q, d = q.shape
    if k.shape != v.shape:
        _fail(op, f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[0] != B or k.shape[1] not in (1, H) or k.shape[3] != d:
        _fail(op, f"k and v must have shape (B, H, n, d) = ({B}, {H}, n, {d}) or ({B}, 1, n, {d}), "
                  f"got {tuple(k.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        _fail(op, f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype} and {v.dtype}", TypeError)
    n = k.shape[2]
    _check_proj_matrix(op, "E", E, n, H)
    if F is not None:
        _check_proj_matrix(op, "F", F, n, H)
        if F.shape[-1] != E.shape[-1]:
            _fail(op, f"E and F must project to the same k, got shapes {tuple(E.shape)} and {tuple(F.shape)}")
    _check_mask(op, key_padding_mask, B, n, q.device)
    _check_devices(op, {"q": q, "k": k, "v": v, "E": E, "F": F})
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p <= 1.0:
        _fail(op, f"dropout_p must be a number in [0, 1], got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(d) if d > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        _fail(op, f"scale must be a finite number or None, got {scale!r}")
    if H == 0:
        _fail(op, f"q must have at least one head (H >= 1), got q of shape {tuple(q.shape)}")
    if d == 0:
        _fail(op, f"the head dim d must be at least 1, got q of shape {tuple(q.shape)}")
    name = _backend.resolve(op, backend, q.device)
    seed = _ref.draw_seed() if dropout_p > 0 else 0
    if name == "reference":
        return _ref.linformer_attention(
            q, k, v, E, F, key_padding_mask=key_padding_mask, dropout_p=dropout_p, scale=scale, seed=seed
        )
    _check_backend_limits(op, name, q.dtype, d)
    kp = _project(name, k, E, key_padding_mask)
    vp = _project(name, v, E if F is None else F, key_padding_mask)
    # one key/value head attended by every query head: a shared projection keeps one head, a
    # per-head one gives H, so K' and V' are broadcast to H separately
    if kp.shape[1] != H:
        kp = kp.expand(B, H, *kp.shape[2:])
    if vp.shape[1] != H:
        vp = vp.expand(B, H, *vp.shape[2:])
    out, _ = _ATTEND.kernel(name)(q, kp, vp, float(scale), float(dropout_p), seed)
    return out
