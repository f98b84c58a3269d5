"""The SAC operators (schemas in pyops/_schemas.py): their Triton kernels, fake kernels and
autograd, registered once for every backend (see :mod:`pyops._registry`)."""

from __future__ import annotations

from pyops._registry import Op
from pyops.sac._triton import (
    _format,
    _opmath,
    _triton_sac_conv2d,
    _triton_sac_conv2d_backward,
    _triton_sac_conv2d_igemm,
)

# ---- fake kernels and autograd ----------------------------------------------------------------


def _out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _fake_sac_conv2d(x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
                     pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups):
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    Ho = _out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = _out_size(W, kw, stride[1], padding[1], dilation[1])
    fmt = _format(x)
    acc = _opmath(x)
    out = x.new_empty((N, O, Ho, Wo)).contiguous(memory_format=fmt)
    diff = x.new_empty((N, O, Ho, Wo)).contiguous(memory_format=fmt)
    xp = x.new_empty(x.shape).contiguous(memory_format=fmt)
    return (out, x.new_empty((N, 1, Ho, Wo), dtype=acc), diff, xp, x.new_empty((N, C), dtype=acc),
            x.new_empty((N, O), dtype=acc))


def _fake_sac_conv2d_backward(grad_out, xp, weight, weight_gamma, weight_beta, weight_diff, switch_weight,
                              pre_weight, post_weight, switch, branch_diff, x_mean, y_mean,
                              stride, padding, dilation, groups):
    O = weight.shape[0]
    C = xp.shape[1]
    return [
        xp.new_empty(xp.shape).contiguous(memory_format=_format(xp)),
        weight.new_empty(weight.shape),
        weight.new_empty(weight_gamma.shape),
        weight.new_empty(weight_beta.shape),
        weight.new_empty(weight.shape),
        weight.new_empty((1, C, 1, 1)),
        weight.new_empty((1,)),
        weight.new_empty((C, C, 1, 1)),
        weight.new_empty((C,)),
        weight.new_empty((O, O, 1, 1)),
        weight.new_empty((O,)),
        weight.new_empty((O,)),
    ]


def _setup_context(ctx, inputs, output):
    (x, weight, gamma, beta, weight_diff, switch_weight, switch_bias, pre_weight, pre_bias,
     post_weight, post_bias, bias, stride, padding, dilation, groups) = inputs
    _, switch, diff, xp, x_mean, y_mean = output
    # x' instead of x: the backward needs only x' (saving it costs no memory the convolutions'
    # autograd would not hold, and spares recomputing it)
    ctx.save_for_backward(xp, weight, gamma, beta, weight_diff, switch_weight, pre_weight, post_weight,
                          switch, diff, x_mean, y_mean)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None
    ctx.set_materialize_grads(False)  # the saved outputs get no gradient: no zero tensors for them


def _backward_factory(backward: Op):
    def make_backward(variant: str):
        backward_op = backward.variant(variant)

        def backward_fn(ctx, grad_out, *unused_grads):  # the saved outputs get no gradient
            if grad_out is None:
                return (None,) * 16
            grads = backward_op(grad_out, *ctx.saved_tensors, *ctx.geometry)
            g_bias = grads[11] if ctx.has_bias else None
            return (*grads[:11], g_bias, None, None, None, None)

        return backward_fn

    return make_backward


_SAC = Op("sac_conv2d")
_SAC_BACKWARD = Op("sac_conv2d_backward")
_SAC_IGEMM = Op("sac_conv2d_igemm")
_SAC_BACKWARD_IGEMM = Op("sac_conv2d_backward_igemm")
for _op, _triton, _fake in (
    (_SAC, _triton_sac_conv2d, _fake_sac_conv2d),
    (_SAC_IGEMM, _triton_sac_conv2d_igemm, _fake_sac_conv2d),
    (_SAC_BACKWARD, _triton_sac_conv2d_backward, _fake_sac_conv2d_backward),
    (_SAC_BACKWARD_IGEMM, _triton_sac_conv2d_backward, _fake_sac_conv2d_backward),  # both forwards save the same tensors
):
    _op.register_triton(_triton)
    _op.register_fake(_fake)
_SAC.register_autograd(_backward_factory(_SAC_BACKWARD), setup_context=_setup_context)
_SAC_IGEMM.register_autograd(_backward_factory(_SAC_BACKWARD_IGEMM), setup_context=_setup_context)
