"""The ADA operators (schemas in pyops/_schemas.py): their Triton kernels, fake kernels and
autograd, registered once for every backend (see :mod:`pyops._registry`). Each op's backward is
its adjoint, itself an op whose backward is the forward again."""

from __future__ import annotations

import torch

from pyops._registry import Op
from pyops.ada._triton import (
    _triton_filter_noise_cutout,
    _triton_filter_noise_cutout_backward,
    _triton_geom_color,
    _triton_geom_color_backward,
)


def _fake_geom_color(images, G_inv, C):
    return images.new_empty(images.shape)


def _linear_part(C):
    # the offset column dropped: what the adjoint of the adjoint must apply
    return None if C is None else torch.cat([C[:, :, :3], torch.zeros_like(C[:, :, 3:])], dim=2)


def _setup_context(ctx, inputs, output):
    _, G_inv, C = inputs
    ctx.G_inv, ctx.C = G_inv, C


def _make_backwards(variant: str):
    forward_op = _GEOM_COLOR.variant(variant)
    adjoint_op = _GEOM_COLOR_ADJOINT.variant(variant)

    def backward_of_forward(ctx, grad):
        return adjoint_op(grad, ctx.G_inv, ctx.C), None, None

    def backward_of_adjoint(ctx, grad):
        return forward_op(grad, ctx.G_inv, _linear_part(ctx.C)), None, None

    return backward_of_forward, backward_of_adjoint


def _fake_filter(images, filters, sigma, noise, boxes):
    return images.new_empty(images.shape)


def _fake_filter_backward(grad, filters, boxes):
    return grad.new_empty(grad.shape)


def _setup_filter(ctx, inputs, output):
    ctx.filters, ctx.boxes = inputs[1], inputs[-1]


def _make_filter_backwards(variant: str):
    forward_op = _FILTER.variant(variant)
    adjoint_op = _FILTER_ADJOINT.variant(variant)

    def backward_of_forward(ctx, grad):
        return adjoint_op(grad, ctx.filters, ctx.boxes), None, None, None, None

    def backward_of_adjoint(ctx, grad):  # the noise is not part of the linear map
        return forward_op(grad, ctx.filters, None, None, ctx.boxes), None, None

    return backward_of_forward, backward_of_adjoint


_GEOM_COLOR = Op("ada_geom_color")
_GEOM_COLOR_ADJOINT = Op("ada_geom_color_backward")
_FILTER = Op("ada_filter_noise_cutout")
_FILTER_ADJOINT = Op("ada_filter_noise_cutout_backward")
for _op, _triton, _fake in (
    (_GEOM_COLOR, _triton_geom_color, _fake_geom_color),
    (_GEOM_COLOR_ADJOINT, _triton_geom_color_backward, _fake_geom_color),
    (_FILTER, _triton_filter_noise_cutout, _fake_filter),
    (_FILTER_ADJOINT, _triton_filter_noise_cutout_backward, _fake_filter_backward),
):
    _op.register_triton(_triton)
    _op.register_fake(_fake)
# each op's backward is the other op (the adjoint), so gradients of any order work
_GEOM_COLOR.register_autograd(lambda variant: _make_backwards(variant)[0], setup_context=_setup_context)
_GEOM_COLOR_ADJOINT.register_autograd(lambda variant: _make_backwards(variant)[1], setup_context=_setup_context)
_FILTER.register_autograd(lambda variant: _make_filter_backwards(variant)[0], setup_context=_setup_filter)
_FILTER_ADJOINT.register_autograd(lambda variant: _make_filter_backwards(variant)[1], setup_context=_setup_filter)
