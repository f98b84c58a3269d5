"""Linformer ops (Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020).

Keys and values of length n are projected along the sequence axis to k positions
(``K' = Eᵀ K``, ``V' = Fᵀ V``), then every query attends to those k positions, so attention costs
O(n·k·d) instead of O(n²·d). Two kernels per pass: the projection (a GEMM over the sequence axis)
and flash-style attention against the small K', V' that never writes the n×k score matrix (the
backward recomputes the probabilities from the saved log-sum-exp).

Public API: :func:`linformer_project`, :func:`linformer_attention`, :class:`LinformerSelfAttention`
(with :func:`init_projection` and :func:`shared_projection`). The semantics are those of
:mod:`pyops.reference.linformer`.

Files: ``attention.py`` holds the functions (with their argument checks and dispatch budgets),
``layer.py`` the module and its projection matrices; ``_ops.py`` the operators' registrations
(Triton kernels, fake kernels, autograd); ``_triton.py`` the Triton host glue; ``_selfcheck.py``
the ``python -m pyops`` checks.
"""

from pyops.linformer import _selfcheck  # noqa: F401  (registers the python -m pyops checks)
from pyops.linformer.attention import CAUSAL_ERROR, linformer_attention, linformer_project
from pyops.linformer.layer import SHARING, LinformerSelfAttention, init_projection, shared_projection

__all__ = [
    "CAUSAL_ERROR",
    "init_projection",
    "linformer_attention",
    "linformer_project",
    "LinformerSelfAttention",
    "SHARING",
    "shared_projection",
]
