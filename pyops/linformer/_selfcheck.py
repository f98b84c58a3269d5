"""Checks of the Linformer ops for ``python -m pyops`` (small random inputs, every backend)."""

from __future__ import annotations

import torch

from pyops import _selfcheck
from pyops.linformer.attention import linformer_attention
from pyops.reference import linformer as _ref


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
