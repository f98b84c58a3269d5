"""The Linformer operators (schemas in pyops/_schemas.py): their Triton kernels, fake kernels and
autograd, registered once for every backend (see :mod:`pyops._registry`)."""

from __future__ import annotations

import torch

from pyops._registry import Op
from pyops.linformer._triton import _triton_attend, _triton_attend_backward, _triton_project, _triton_project_backward

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
