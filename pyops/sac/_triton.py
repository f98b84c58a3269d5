"""Triton host glue of the SAC operators: the composition of csrc/sac/sac_host.h step for step
(the same ATen calls), with the Triton kernels of :mod:`pyops.kernels.sac` for the fused steps.

Each ``_triton_sac_conv2d*`` function is the Triton kernel of the pyops operator of that name
(registered in :mod:`pyops.sac._ops`); pyops.kernels (and triton) are imported on first use.
"""

from __future__ import annotations

import torch

from pyops.reference.sac import AWS_EPS


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _format(x: torch.Tensor) -> torch.memory_format:
    # same rule as csrc/sac/sac_host.h: use_channels_last
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


# ---- Triton kernels of the operators: the composition of csrc/sac/sac_host.h -----------------
# step for step (the same ATen calls), with the Triton kernels of pyops.kernels.sac for the fused
# steps. Registered for CUDA tensors, and for CPU tensors so the Triton interpreter can run them
# in tests; pyops.kernels (and triton) are imported on first use.


def _empty(shape, like, fmt=torch.contiguous_format):
    """An uninitialised tensor in like's dtype and device: one ATen call, as at::empty in the C++
    host (new_empty and empty_like issue two)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _aws(k, weight, gamma, beta, weight_diff, fmt, tap_major=False):
    """AWS(weight) and AWS(weight) + weight_diff in weight's dtype (sac_host.h aws_weights), in
    x's layout ``fmt`` (channels_last weights for channels_last x, which cuDNN takes as they are),
    or (kh, kw, C/g, O) contiguous for the dual convolution (``tap_major``)."""
    if tap_major:
        O, Cg, KH, KW = weight.shape
        w_small, w_large = _empty((KH, KW, Cg, O), weight), _empty((KH, KW, Cg, O), weight)
    else:
        w_small, w_large = _empty(weight.shape, weight, fmt), _empty(weight.shape, weight, fmt)
    k.aws(weight.contiguous(), gamma.contiguous(), beta.contiguous(), weight_diff.contiguous(), AWS_EPS,
          w_small, w_large, tap_major)
    return w_small, w_large


def _context(k, v, W, b):
    """Context of the pixel means v (N, K) op-math: b + W v, (N, J) op-math."""
    out = _empty((v.shape[0], W.shape[0]), v)
    k.linear(v, W.contiguous(), b.contiguous(), out)
    return out


def _triton_prepass(k, x, switch_weight, switch_bias, pre_weight, pre_bias, stride):
    """The switch pre-pass of x (dense in its layout): (x' = x + PreCtx(GAP(x)), GAP(x) (N, C),
    switch s = pool5(reflect2(w_s . x')) every ``stride`` pixels + b_s (N, 1, Ho, Wo)), the mean
    and the switch op-math."""
    fmt = _format(x)
    N, C, H, W = x.shape
    x_mean = x.mean(dim=(2, 3), dtype=_opmath(x))
    ctx = _context(k, x_mean, pre_weight, pre_bias)
    xp = _empty(x.shape, x, fmt)
    z = _empty((N, H, W), x_mean)
    k.context_switch_dot(x, ctx, switch_weight.contiguous(), fmt == torch.channels_last, xp, z)
    s = _empty((N, 1, (H - 1) // stride[0] + 1, (W - 1) // stride[1] + 1), x_mean)
    k.switch_pool(z, switch_bias, stride, s)
    return xp, x_mean, s


def _post_context(k, y, post_weight, post_bias):
    """In place: y <- y + PostCtx(GAP(y)); returns GAP(y) (N, O) op-math."""
    y_mean = y.mean(dim=(2, 3), dtype=_opmath(y))
    y.add_(_context(k, y_mean, post_weight, post_bias).view(*y.shape[:2], 1, 1))
    return y_mean


def _triton_sac_conv2d(x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
                       pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups):
    """The composition forward (sac_host.h sac_forward): the pre-pass, AWS, two library
    convolutions, the blend (+ bias) and the post-context."""
    from pyops.kernels import sac as k

    fmt = _format(x)
    x = x.contiguous(memory_format=fmt)
    xp, x_mean, s = _triton_prepass(k, x, switch_weight, switch_bias, pre_weight, pre_bias, stride)
    w_small, w_large = _aws(k, weight, weight_gamma, weight_beta, weight_diff, fmt)
    diff = torch.convolution(xp, w_small, None, stride, padding, dilation, False, [0, 0],
                             groups).contiguous(memory_format=fmt)
    y = torch.convolution(xp, w_large, None, stride, [3 * v for v in padding], [3 * v for v in dilation], False,
                          [0, 0], groups).contiguous(memory_format=fmt)
    # y <- blend + bias, diff <- small - large
    k.blend_forward(diff, y, s, None if bias is None else bias.contiguous(), fmt == torch.channels_last)
    y_mean = _post_context(k, y, post_weight, post_bias)
    return y, s, diff, xp, x_mean, y_mean


def _triton_sac_conv2d_igemm(x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
                             pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation,
                             groups):
    """The "igemm" forward: the composition's pre-pass, AWS and post-context around one
    dual-accumulator kernel for both convolutions and the blend (+ bias)."""
    from pyops.kernels import sac as k

    fmt = _format(x)
    x = x.contiguous(memory_format=fmt)
    xp, x_mean, s = _triton_prepass(k, x, switch_weight, switch_bias, pre_weight, pre_bias, stride)
    w_small, w_large = _aws(k, weight, weight_gamma, weight_beta, weight_diff, fmt, tap_major=True)
    y = _empty((x.shape[0], weight.shape[0], *s.shape[2:]), x, fmt)
    diff = _empty(y.shape, x, fmt)
    # its per-tile pixel sums of y go unused: the post-context takes the mean of the rounded y, as
    # the composition does
    k.dual_conv(xp, w_small, w_large, s, None if bias is None else bias.contiguous(), y, diff, stride, padding,
                dilation, groups)
    y_mean = _post_context(k, y, post_weight, post_bias)
    return y, s, diff, xp, x_mean, y_mean


def _triton_sac_conv2d_backward(grad_out, xp, weight, weight_gamma, weight_beta, weight_diff, switch_weight,
                                pre_weight, post_weight, switch, branch_diff, x_mean, y_mean,
                                stride, padding, dilation, groups):
    """The backward (sac_host.h sac_backward): gradients to (x, weight, weight_gamma, weight_beta,
    weight_diff, switch_weight, switch_bias, pre_weight, pre_bias, post_weight, post_bias, bias) in
    x's dtype, from x' and the saved switch, branch difference and means."""
    from pyops.kernels import sac as k

    fmt = _format(xp)
    cl = fmt == torch.channels_last
    xp = xp.contiguous(memory_format=fmt)
    dt = xp.dtype
    N, C, H, W = xp.shape
    O = weight.shape[0]
    Ho, Wo = branch_diff.shape[2:]
    grad_out = grad_out.contiguous(memory_format=fmt)
    diff = branch_diff.contiguous(memory_format=fmt)
    s = switch.contiguous()

    # post-context: out = y + Wpost GAP(y) + bpost; the bias reaches every pixel of y
    g_sum = grad_out.sum(dim=(2, 3), dtype=_opmath(xp))  # (N, O)
    g_post_weight, g_post_bias, g_bias = _empty(post_weight.shape, xp), _empty((O,), xp), _empty((O,), xp)
    ctx_grad = _empty((N, O), x_mean)
    k.linear_backward(g_sum, y_mean.contiguous(), post_weight.contiguous(), Ho * Wo, g_post_weight, ctx_grad,
                      g_post_bias, g_bias)
    g_small, g_large = _empty(grad_out.shape, xp, fmt), _empty(grad_out.shape, xp, fmt)
    g_switch = _empty((N, Ho, Wo), x_mean)
    k.blend_backward(grad_out, diff, s, ctx_grad, g_small, g_large, g_switch, cl)

    # the two convolutions
    w_small, w_large = _aws(k, weight, weight_gamma, weight_beta, weight_diff, fmt)
    gx_small, gw_small, _ = torch.ops.aten.convolution_backward(
        g_small, xp, w_small, None, stride, padding, dilation, False, [0, 0], groups, [True, True, False])
    gx_large, gw_large, _ = torch.ops.aten.convolution_backward(
        g_large, xp, w_large, None, stride, [3 * v for v in padding], [3 * v for v in dilation], False, [0, 0],
        groups, [True, True, False])
    gx_small = gx_small.contiguous(memory_format=fmt)
    gx_large = gx_large.contiguous(memory_format=fmt)

    # switch: s = sample_stride(pool5(reflect2(w_s . x'))) + b_s; q = dL/d(w_s . x')
    g_switch_bias = g_switch.sum().to(dt).view(1)
    q = _empty((N, H, W), x_mean)
    k.switch_pool_adjoint(g_switch, stride, q)

    # x' = x + Wpre GAP(x) + bpre: the per-image channel sums of dL/dx' feed the pre-context
    chunks = (H * W + k.SUM_CHUNK - 1) // k.SUM_CHUNK
    ctx_part, switch_part = _empty((N, chunks, C), x_mean), _empty((N, chunks, C), x_mean)
    w_s = switch_weight.contiguous()
    k.input_grad_sums(gx_small, gx_large, xp, q, w_s, cl, ctx_part, switch_part)
    g_switch_weight = switch_part.sum(dim=(0, 1)).to(dt).view(1, C, 1, 1)
    g_pre_weight, g_pre_bias, corr = _empty(pre_weight.shape, xp), _empty((C,), xp), _empty((N, C), x_mean)
    k.linear_backward(ctx_part.sum(1), x_mean.contiguous(), pre_weight.contiguous(), H * W, g_pre_weight, corr,
                      g_pre_bias)
    gx = _empty(xp.shape, xp, fmt)
    k.input_grad(gx_small, gx_large, q, w_s, corr, cl, gx)

    # AWS: w_small = gamma * standard + beta, w_large = w_small + weight_diff
    g_weight, g_gamma, g_beta = _empty(weight.shape, xp), _empty(weight_gamma.shape, xp), _empty(weight_beta.shape, xp)
    k.aws_backward(gw_small, gw_large, weight.contiguous(), weight_gamma.contiguous(), AWS_EPS, g_weight, g_gamma,
                   g_beta)

    return [gx, g_weight, g_gamma, g_beta, gw_large.contiguous(), g_switch_weight, g_switch_bias, g_pre_weight,
            g_pre_bias, g_post_weight, g_post_bias, g_bias]
