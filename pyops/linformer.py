"""Linformer ops (Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020).

Keys and values of length n are projected along the sequence axis to k positions
(``K' = Eᵀ K``, ``V' = Fᵀ V``), then every query attends to those k positions, so attention costs
O(n·k·d) instead of O(n²·d). Two kernels per pass: the projection (a GEMM over the sequence axis)
and flash-style attention against the small K', V' that never writes the n×k score matrix (the
backward recomputes the probabilities from the saved log-sum-exp).

Public API: :func:`linformer_project`, :func:`linformer_attention`, :class:`LinformerSelfAttention`.
The semantics are those of :mod:`pyops.reference.linformer`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyops import _backend, _checks, _scripting, _selfcheck
from pyops._budget import budget
from pyops._registry import Op
from pyops._interop import accepts_arrays
from pyops.reference import linformer as _ref

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_GPU_MAX_HEAD_DIM = 128

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


# ---- module --------------------------------------------------------------------------------

SHARING = ("headwise", "kv", "layerwise", "none")


def init_projection(E: torch.Tensor) -> torch.Tensor:
    """Initialise a projection matrix (..., n, k) in place: uniform in ±1/sqrt(k), as the
    widely used lucidrains implementation does (std 1/sqrt(3k)); K' = Eᵀ K then sums n rows
    with weights of that size. Returns E."""
    bound = 1.0 / math.sqrt(E.shape[-1])
    with torch.no_grad():
        return E.uniform_(-bound, bound)


def shared_projection(seq_len: int, k: int = 256, **factory) -> nn.Parameter:
    """One (seq_len, k) projection Parameter for layerwise sharing: pass the same object as
    ``projection=`` to every :class:`LinformerSelfAttention` with ``sharing="layerwise"``; it then
    projects keys and values of every head in every layer (the paper's layerwise sharing)."""
    return nn.Parameter(init_projection(torch.empty(seq_len, k, **factory)))


class LinformerSelfAttention(nn.Module):
    """Multi-head Linformer self-attention: a drop-in attention layer over (B, n, dim) inputs.

    Args:
        dim: model width.
        seq_len: the longest sequence (n_max); shorter inputs use the first n rows of E, F.
        k: projected length.
        heads: attention heads. ``dim_head`` defaults to ``dim // heads``.
        share_kv: keys and values share one projection (F = E); implied by ``sharing="kv"`` and
            ``"layerwise"``.
        sharing: the paper's parameter sharing of the projections:
            ``"headwise"`` one E and one F per layer, shared by all heads (the default);
            ``"kv"`` one E per layer for keys and values of all heads;
            ``"layerwise"`` one E for every layer: create it with :func:`shared_projection` and
            pass the same Parameter as ``projection=`` to every layer;
            ``"none"`` separate E and F per head, shape (heads, seq_len, k).
        one_kv_head: a single key/value head shared by all query heads.
        dropout: dropout on the attention probabilities, applied in training mode only.
        projection: the shared Parameter of ``sharing="layerwise"`` (required there, else unused).
        backend: passed to :func:`linformer_attention`.

    ``forward(x, key_padding_mask=None)``: x (B, n, dim), n <= seq_len, key_padding_mask (B, n)
    bool with True at padding; returns (B, n, dim).

    E and F are initialised with :func:`init_projection` (uniform ±1/sqrt(k)).
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        k: int = 256,
        heads: int = 8,
        dim_head: int | None = None,
        share_kv: bool = False,
        sharing: str = "headwise",
        one_kv_head: bool = False,
        dropout: float = 0.0,
        projection: nn.Parameter | None = None,
        backend: str | None = None,
    ):
        super().__init__()
        fn = "LinformerSelfAttention"
        dim, seq_len, k, heads = (_checks.integer(fn, n, v, min=1) for n, v in
                                  (("dim", dim), ("seq_len", seq_len), ("k", k), ("heads", heads)))
        if dim_head is not None:
            dim_head = _checks.integer(fn, "dim_head", dim_head, min=1)
        dropout = _checks.number(fn, "dropout", dropout, min=0, max=1)
        if sharing not in SHARING:
            raise ValueError(f"LinformerSelfAttention: sharing must be one of {SHARING}, got {sharing!r}")
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"LinformerSelfAttention: dim = {dim} is not divisible by heads = {heads}; pass dim_head")
            dim_head = dim // heads
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"LinformerSelfAttention: dropout must be in [0, 1], got {dropout}")
        self.seq_len, self.k, self.heads, self.dim_head = seq_len, k, heads, dim_head
        self.sharing, self.dropout, self.backend = sharing, dropout, backend
        self.kv_heads = 1 if one_kv_head else heads
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, self.kv_heads * dim_head, bias=False)
        self.to_v = nn.Linear(dim, self.kv_heads * dim_head, bias=False)
        self.to_out = nn.Linear(inner, dim)
        if sharing == "layerwise":
            if not isinstance(projection, nn.Parameter) or tuple(projection.shape) != (seq_len, k):
                got = tuple(projection.shape) if isinstance(projection, torch.Tensor) else projection
                raise ValueError(
                    f"LinformerSelfAttention: sharing='layerwise' needs projection=pyops.shared_projection"
                    f"({seq_len}, {k}) shared by the layers, a Parameter of shape ({seq_len}, {k}); got {got}"
                )
            self.shared_E = projection  # registered in every layer; parameters() deduplicates it
            self.E = self.F = None
        else:
            shape = (heads, seq_len, k) if sharing == "none" else (seq_len, k)
            self.E = nn.Parameter(init_projection(torch.empty(shape)))
            separate_f = sharing in ("headwise", "none") and not share_kv
            self.F = nn.Parameter(init_projection(torch.empty(shape))) if separate_f else None

    @budget(forward=12, backward=21, note="the q/k/v/out projections and linformer_attention")
    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (see pyops._scripting)
            return self._forward_scripted(x, key_padding_mask)
        _checks.tensor("LinformerSelfAttention", "x", x, dims=3, shape="(B, n, dim)")
        B, n, _ = x.shape
        if n > self.seq_len:
            raise ValueError(f"LinformerSelfAttention: sequence length {n} exceeds seq_len = {self.seq_len}")
        q = self.to_q(x).view(B, n, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(x).view(B, n, self.kv_heads, self.dim_head).transpose(1, 2)
        v = self.to_v(x).view(B, n, self.kv_heads, self.dim_head).transpose(1, 2)
        E = self.shared_E if self.sharing == "layerwise" else self.E
        out = linformer_attention(
            q, k, v, E, self.F, key_padding_mask=key_padding_mask,
            dropout_p=self.dropout if self.training else 0.0, backend=self.backend,
        )
        return self.to_out(out.transpose(1, 2).reshape(B, n, self.heads * self.dim_head))

    def _forward_scripted(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """:meth:`forward` under ``torch.jit.script``: the same projections and operators."""
        if x.dim() != 3:
            raise ValueError("LinformerSelfAttention: x must be (B, n, dim)")
        B, n = x.shape[0], x.shape[1]
        if n > self.seq_len:
            raise ValueError("LinformerSelfAttention: the sequence is longer than seq_len")
        q = self.to_q(x).view(B, n, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(x).view(B, n, self.kv_heads, self.dim_head).transpose(1, 2)
        v = self.to_v(x).view(B, n, self.kv_heads, self.dim_head).transpose(1, 2)
        E = self.E
        if E is None:  # sharing="layerwise"
            E = self.shared_E if hasattr(self, "shared_E") else None
        assert E is not None
        out = _scripting.linformer_attention(
            q, k, v, E, self.F, key_padding_mask, self.dropout if self.training else 0.0, self.backend
        )
        return self.to_out(out.transpose(1, 2).reshape(B, n, self.heads * self.dim_head))


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


# ---- fake kernels and autograd -----------------------------------------------------------------


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _fake_project(x, E, mask):
    return x.new_empty((x.shape[0], x.shape[1], E.shape[-1], x.shape[3]))


def _fake_project_backward(grad, x, E, mask):
    return x.new_empty(x.shape), E.new_empty(E.shape)


def _fake_attend(q, kp, vp, scale, dropout_p, seed):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=_opmath(q))


def _fake_attend_backward(grad, q, kp, vp, out, lse, scale, dropout_p, seed):
    return q.new_empty(q.shape), kp.new_empty(kp.shape), vp.new_empty(vp.shape)


def _project_setup(ctx, inputs, output):
    x, E, mask = inputs
    ctx.save_for_backward(x, E)
    ctx.mask = mask


def _make_project_backward(variant: str):
    backward_op = _PROJECT_BACKWARD.variant(variant)

    def backward(ctx, grad):
        x, E = ctx.saved_tensors
        dx, dE = backward_op(grad, x, E, ctx.mask)
        return dx, dE, None

    return backward


def _attend_setup(ctx, inputs, output):
    q, kp, vp, scale, dropout_p, seed = inputs
    out, lse = output
    ctx.save_for_backward(q, kp, vp, out, lse)
    ctx.params = (scale, dropout_p, seed)
    ctx.mark_non_differentiable(lse)


def _make_attend_backward(variant: str):
    backward_op = _ATTEND_BACKWARD.variant(variant)

    def backward(ctx, grad_out, grad_lse):
        q, kp, vp, out, lse = ctx.saved_tensors
        dq, dk, dv = backward_op(grad_out, q, kp, vp, out, lse, *ctx.params)
        return dq, dk, dv, None, None, None

    return backward


_PROJECT = Op("linformer_project")
_PROJECT_BACKWARD = Op("linformer_project_backward")
_ATTEND = Op("linformer_attend")
_ATTEND_BACKWARD = Op("linformer_attend_backward")
for _op, _triton, _fake in (
    (_PROJECT, _triton_project, _fake_project),
    (_PROJECT_BACKWARD, _triton_project_backward, _fake_project_backward),
    (_ATTEND, _triton_attend, _fake_attend),
    (_ATTEND_BACKWARD, _triton_attend_backward, _fake_attend_backward),
):
    _op.register_triton(_triton)
    _op.register_fake(_fake)
_PROJECT.register_autograd(_make_project_backward, setup_context=_project_setup)
_ATTEND.register_autograd(_make_attend_backward, setup_context=_attend_setup)


# ---- self-check for `python -m pyops` ---------------------------------------------------------


def _attention_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    q, k, v = randn(2, 3, 37, 16), randn(2, 3, 37, 16), randn(2, 3, 37, 16)
    return q, k, v, randn(40, 9) * 0.3, randn(40, 9) * 0.3


_selfcheck.register(
    _selfcheck.OpCheck(
        name="linformer_attention",
        make_inputs=_attention_inputs,
        run=lambda q, k, v, E, F, backend: linformer_attention(q, k, v, E, F, backend=backend),
        reference=lambda q, k, v, E, F: _ref.linformer_attention(q, k, v, E, F),
    )
)
