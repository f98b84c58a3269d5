"""The Linformer layer :class:`LinformerSelfAttention` and its projection matrices
(:func:`init_projection`, :func:`shared_projection`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyops import _checks, _scripting
from pyops._budget import budget
from pyops.linformer.attention import linformer_attention

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

    The first five arguments are positional as in lucidrains' ``linformer`` (whose checkpoints
    :meth:`from_lucidrains` loads); the rest are keyword-only.

    ``forward(x, key_padding_mask=None, context=None)``: x (B, n, dim); keys and values come from
    ``context`` (B, m, dim) when given (cross-attention, as lucidrains' ``context=``), else from x;
    their length (n or m) must be <= seq_len; key_padding_mask (B, n or m) bool with True at
    padding; returns (B, n, dim).

    E and F are initialised with :func:`init_projection` (uniform ±1/sqrt(k)).
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        k: int = 256,
        heads: int = 8,
        dim_head: int | None = None,
        *,
        one_kv_head: bool = False,
        share_kv: bool = False,
        sharing: str = "headwise",
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
    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (see pyops._scripting)
            return self._forward_scripted(x, key_padding_mask, context)
        fn = "LinformerSelfAttention"
        _checks.tensor(fn, "x", x, dims=3, shape="(B, n, dim)")
        B, n, _ = x.shape
        kv = x
        if context is not None:
            _checks.tensor(fn, "context", context, dims=3, shape="(B, m, dim)")
            if context.shape[0] != B or context.shape[2] != x.shape[2]:
                _checks.fail(fn, f"context must have shape (B, m, dim) = ({B}, m, {x.shape[2]}), got {tuple(context.shape)}")
            kv = context
        m = kv.shape[1]
        if m > self.seq_len:
            raise ValueError(f"pyops.LinformerSelfAttention: sequence length {m} of the keys/values exceeds seq_len = {self.seq_len}")
        q = self.to_q(x).view(B, n, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(kv).view(B, m, self.kv_heads, self.dim_head).transpose(1, 2)
        v = self.to_v(kv).view(B, m, self.kv_heads, self.dim_head).transpose(1, 2)
        E = self.shared_E if self.sharing == "layerwise" else self.E
        out = linformer_attention(
            q, k, v, E, self.F, key_padding_mask=key_padding_mask,
            dropout_p=self.dropout if self.training else 0.0, backend=self.backend,
        )
        return self.to_out(out.transpose(1, 2).reshape(B, n, self.heads * self.dim_head))

    def _forward_scripted(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, context: torch.Tensor | None
    ) -> torch.Tensor:
        """:meth:`forward` under ``torch.jit.script``: the same projections and operators."""
        if x.dim() != 3:
            raise ValueError("LinformerSelfAttention: x must be (B, n, dim)")
        kv = x if context is None else context
        B, n, m = x.shape[0], x.shape[1], kv.shape[1]
        if m > self.seq_len:
            raise ValueError("LinformerSelfAttention: the sequence is longer than seq_len")
        q = self.to_q(x).view(B, n, self.heads, self.dim_head).transpose(1, 2)
        k = self.to_k(kv).view(B, m, self.kv_heads, self.dim_head).transpose(1, 2)
        v = self.to_v(kv).view(B, m, self.kv_heads, self.dim_head).transpose(1, 2)
        E = self.E
        if E is None:  # sharing="layerwise"
            E = self.shared_E if hasattr(self, "shared_E") else None
        assert E is not None
        out = _scripting.linformer_attention(
            q, k, v, E, self.F, key_padding_mask, self.dropout if self.training else 0.0, self.backend
        )
        return self.to_out(out.transpose(1, 2).reshape(B, n, self.heads * self.dim_head))

    @classmethod
    def from_lucidrains(
        cls, state_dict: dict, *, heads: int, dim_head: int | None = None, dropout: float = 0.0, backend: str | None = None
    ) -> LinformerSelfAttention:
        """A layer holding the weights of a state_dict of lucidrains' ``linformer``
        ``LinformerSelfAttention`` (keys ``to_q.weight``, ``to_k.weight``, ``proj_k``, ``to_v.weight``
        and ``proj_v`` unless it was built with ``share_kv``, ``to_out.weight``, ``to_out.bias``), with
        the same outputs. ``heads`` (and ``dim_head`` when it is not ``inner // heads``) as it was
        built with: the shapes do not tell them. ``dim``, ``seq_len``, ``k``, ``one_kv_head`` and
        ``share_kv`` are read from the shapes and keys. lucidrains' ``share_kv`` ties the value
        projection to the key projection; the pyops layer gets ``to_v`` as a copy of ``to_k`` (and
        F = E), so outputs match, but training updates the two separately."""
        fn = "LinformerSelfAttention.from_lucidrains"
        sd = dict(state_dict)
        missing = [key for key in ("to_q.weight", "to_k.weight", "proj_k", "to_out.weight", "to_out.bias") if key not in sd]
        if missing:
            _checks.fail(fn, f"state_dict is not a lucidrains LinformerSelfAttention layout: missing {missing}")
        share_kv = "to_v.weight" not in sd
        if share_kv != ("proj_v" not in sd):
            _checks.fail(fn, "state_dict must hold both to_v.weight and proj_v (or neither, for share_kv)")
        inner, dim = sd["to_q.weight"].shape
        heads = _checks.integer(fn, "heads", heads, min=1)
        if dim_head is None:
            if inner % heads:
                _checks.fail(fn, f"to_q maps to {inner} features, not divisible by heads = {heads}: pass dim_head")
            dim_head = inner // heads
        if heads * dim_head != inner:
            _checks.fail(fn, f"heads * dim_head = {heads} * {dim_head} must equal the {inner} outputs of to_q")
        seq_len, k = sd["proj_k"].shape
        kv_dim = sd["to_k.weight"].shape[0]
        if kv_dim not in (inner, dim_head):
            _checks.fail(fn, f"to_k must map to heads * dim_head = {inner} or dim_head = {dim_head} features, got {kv_dim}")
        layer = cls(dim, seq_len, k, heads, dim_head, one_kv_head=kv_dim != inner, share_kv=share_kv,
                    dropout=dropout, backend=backend)
        to_k = sd.pop("to_k.weight")
        ours = {"to_q.weight": sd.pop("to_q.weight"), "to_k.weight": to_k, "to_v.weight": sd.pop("to_v.weight", to_k),
                "to_out.weight": sd.pop("to_out.weight"), "to_out.bias": sd.pop("to_out.bias"), "E": sd.pop("proj_k")}
        if not share_kv:
            ours["F"] = sd.pop("proj_v")
        if sd:
            _checks.fail(fn, f"state_dict has keys a LinformerSelfAttention cannot place: {sorted(sd)}")
        layer.load_state_dict({name: t.detach().clone() for name, t in ours.items()})
        return layer
