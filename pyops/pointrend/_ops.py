"""The PointRend operators (schemas in pyops/_schemas.py): their Triton kernels, fake kernels and
autograd, registered once for every backend (see :mod:`pyops._registry`)."""

from __future__ import annotations

import torch

from pyops._registry import Op
from pyops.pointrend import _triton

POINT_SAMPLE = Op("point_sample")
BACKWARD_INPUT = Op("point_sample_backward_input")
BACKWARD_COORDS = Op("point_sample_backward_coords")
UNCERTAIN_POINT_COORDS = Op("uncertain_point_coords")
SUBDIVISION_STEP = Op("subdivision_step")

POINT_SAMPLE.register_triton(_triton.point_sample)
BACKWARD_INPUT.register_triton(_triton.point_sample_backward_input)
BACKWARD_COORDS.register_triton(_triton.point_sample_backward_coords)
UNCERTAIN_POINT_COORDS.register_triton(_triton.uncertain_point_coords)
SUBDIVISION_STEP.register_triton(_triton.subdivision_step)


@POINT_SAMPLE.register_fake
def _(input, coords, align_corners, batch_index=None):
    return _triton.point_values(input, coords.shape[0], coords.shape[1])


@BACKWARD_INPUT.register_fake
def _(grad, input, coords, align_corners, batch_index=None):
    return torch.empty_like(input)


@BACKWARD_COORDS.register_fake
def _(grad, input, coords, align_corners, batch_index=None):
    return coords.new_empty(coords.shape)


@UNCERTAIN_POINT_COORDS.register_fake
def _(logits, classes, candidates, seed, num_points, num_candidates, num_uncertain):
    return logits.new_empty((logits.shape[0], num_points, 2), dtype=torch.float32)


@SUBDIVISION_STEP.register_fake
def _(logits, num_points):
    R, h, w = logits.shape
    P = min(num_points, 4 * h * w)
    return (
        logits.new_empty((R, 2 * h, 2 * w)),
        logits.new_empty((R, P), dtype=torch.int64),
        logits.new_empty((R, P, 2), dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output):
    input, coords, align_corners, batch_index = inputs
    ctx.save_for_backward(input, coords, batch_index)
    ctx.align_corners = align_corners


def _make_backward(variant: str):
    grad_input_op, grad_coords_op = BACKWARD_INPUT.variant(variant), BACKWARD_COORDS.variant(variant)

    def backward(ctx, grad):
        input, coords, batch_index = ctx.saved_tensors
        grad_input = grad_coords = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_input_op(grad, input, coords, ctx.align_corners, batch_index)
        if ctx.needs_input_grad[1]:
            grad_coords = grad_coords_op(grad, input, coords, ctx.align_corners, batch_index)
        return grad_input, grad_coords, None, None

    return backward


POINT_SAMPLE.register_autograd(_make_backward, setup_context=_setup_context)
