"""Switchable atrous convolution (DetectoRS' SAConv2d) in plain PyTorch: the definition the
kernels are tested against, written as directly as the contract in ``shared/specs/sac.md``.

Shapes (``g`` groups): x (N, C, H, W); weight and weight_diff (O, C/g, kh, kw); weight_gamma,
weight_beta (O, 1, 1, 1); switch_weight (1, C, 1, 1), switch_bias (1,); pre_weight (C, C, 1, 1),
pre_bias (C,); post_weight (O, O, 1, 1), post_bias (O,); bias (O,) or None.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AWS_EPS = 1e-5


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def aws_variance(flat: torch.Tensor) -> torch.Tensor:
    """Per-row unbiased variance of (O, M) weights; a row of one weight (fan-in 1, e.g. a 1x1
    depthwise convolution) has variance 0, not torch.var's NaN."""
    return flat.var(dim=1, correction=1 if flat.shape[1] > 1 else 0)


def aws_weight(weight: torch.Tensor, weight_gamma: torch.Tensor, weight_beta: torch.Tensor) -> torch.Tensor:
    """Adaptive weight standardisation: per output channel, ``gamma * (W - mean) / sqrt(var + 1e-5)
    + beta`` with the unbiased variance over the channel's ``C/g * kh * kw`` weights
    (:func:`aws_variance`: at fan-in 1 the variance is 0, the standardised weight 0 and
    ``AWS(W) = beta``)."""
    flat = weight.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = torch.sqrt(aws_variance(flat) + AWS_EPS).view(-1, 1, 1, 1)
    return weight_gamma * ((weight - mean) / std) + weight_beta


def sac_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_gamma: torch.Tensor,
    weight_beta: torch.Tensor,
    weight_diff: torch.Tensor,
    switch_weight: torch.Tensor,
    switch_bias: torch.Tensor,
    pre_weight: torch.Tensor,
    pre_bias: torch.Tensor,
    post_weight: torch.Tensor,
    post_bias: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """The SAConv2d forward (no deformable branch). The bias, when given, is added once after the
    blend (before the post-context pooling), which equals adding it in both branches.

    Empty channels (C = 0 or O = 0, which torch's conv2d does not define for O = 0): a convolution
    over no input channels is 0, so ``y = bias`` (0 without one) at every pixel and
    ``out = y + PostCtx(GAP(y))``; with O = 0 the output is (N, 0, Ho, Wo)."""
    padding, dilation = _pair(padding), _pair(dilation)
    if x.shape[1] == 0 or weight.shape[0] == 0:
        return _empty_channels(x, weight, post_weight, post_bias, bias, _pair(stride))
    # pre-context: a per-image, per-channel constant added to the input
    x = x + F.conv2d(F.adaptive_avg_pool2d(x, 1), pre_weight, pre_bias)
    # switch: 5x5 mean of the reflect-padded input, then a strided 1x1 conv to one channel
    pooled = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel_size=5, stride=1)
    switch = F.conv2d(pooled, switch_weight, switch_bias, stride=stride)
    w = aws_weight(weight, weight_gamma, weight_beta)
    small = F.conv2d(x, w, None, stride, padding, dilation, groups)
    large_padding = tuple(3 * p for p in padding)
    large_dilation = tuple(3 * d for d in dilation)
    large = F.conv2d(x, w + weight_diff, None, stride, large_padding, large_dilation, groups)
    y = switch * small + (1 - switch) * large
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    # post-context
    return y + F.conv2d(F.adaptive_avg_pool2d(y, 1), post_weight, post_bias)


def _empty_channels(x, weight, post_weight, post_bias, bias, stride):
    N, _, H, W = x.shape
    O = weight.shape[0]
    y = x.new_zeros(N, O, (H - 1) // stride[0] + 1, (W - 1) // stride[1] + 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    context = y.mean(dim=(2, 3)) @ post_weight.view(O, O).t() + post_bias
    return y + context.view(N, O, 1, 1)


def two_convolutions(x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1, groups=1):
    """The two plain convolutions (dilation d and 3d) SAConv2d is built on: the speed floor the
    benchmarks compare against."""
    padding, dilation = _pair(padding), _pair(dilation)
    small = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    large = F.conv2d(x, weight, None, stride, tuple(3 * p for p in padding), tuple(3 * d for d in dilation), groups)
    return small, large


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
) -> torch.Tensor:
    """Deformable convolution v1 (Dai et al. 2017) with torchvision's and mmcv's layout.

    input (N, C, H, W); weight (O, C/g, kh, kw) (``g = C / weight.shape[1]`` groups); offset
    (N, 2 * og * kh * kw, Ho, Wo) for ``og`` offset groups, each a contiguous block of C/og input
    channels. Kernel point ``k = i * kw + j`` of offset group ``a`` at output pixel (oy, ox) samples
    its channels bilinearly at ``y = oy * sh - ph + i * dh + offset[2 (a K + k)]``,
    ``x = ox * sw - pw + j * dw + offset[2 (a K + k) + 1]`` (``K = kh * kw``); a corner outside the
    image reads 0, and a point with ``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W`` is 0
    altogether. The samples are then contracted with the weight as a convolution does.
    Differentiable in every tensor (the offsets through the bilinear weights). Computed in
    float32 for float16/bfloat16 tensors (positions, weights, sums), as the kernels do."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    N, C, H, W = input.shape
    O, Cg, kh, kw = weight.shape
    K = kh * kw
    groups = C // Cg
    og = offset.shape[1] // (2 * K)
    Ho, Wo = offset.shape[2:]
    dtype = input.dtype
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    input, offset, weight = input.to(acc), offset.to(acc), weight.to(acc)
    off = offset.reshape(N, og, K, 2, Ho, Wo)
    dev = input.device
    ky = torch.arange(kh, device=dev).repeat_interleave(kw) * dh  # (K,)
    kx = torch.arange(kw, device=dev).repeat(kh) * dw
    base_y = (torch.arange(Ho, device=dev) * sh - ph).view(1, 1, 1, Ho, 1) + ky.view(1, 1, K, 1, 1)
    base_x = (torch.arange(Wo, device=dev) * sw - pw).view(1, 1, 1, 1, Wo) + kx.view(1, 1, K, 1, 1)
    y = base_y.to(acc) + off[:, :, :, 0]  # (N, og, K, Ho, Wo)
    x = base_x.to(acc) + off[:, :, :, 1]
    inside = ((y > -1) & (y < H) & (x > -1) & (x < W)).to(input.dtype)
    y0 = torch.floor(y)
    x0 = torch.floor(x)
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()
    planes = input.reshape(N, og, C // og, H * W)
    samples = 0
    for cy, cx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                        (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        valid = ((cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)).to(input.dtype)
        index = (cy.clamp(0, H - 1) * W + cx.clamp(0, W - 1)).view(N, og, 1, K * Ho * Wo)
        corner = torch.gather(planes, 3, index.expand(N, og, C // og, K * Ho * Wo))
        samples = samples + corner.view(N, og, C // og, K, Ho, Wo) * (wgt * valid * inside).unsqueeze(2)
    columns = samples.reshape(N, groups, Cg * K, Ho * Wo)  # channel-major, then kernel point
    out = torch.matmul(weight.reshape(groups, O // groups, Cg * K), columns)  # (N, g, O/g, Ho Wo)
    out = out.reshape(N, O, Ho, Wo)
    if bias is not None:
        out = out + bias.to(acc).view(1, -1, 1, 1)
    return out.to(dtype)


def sac_deform_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_gamma: torch.Tensor,
    weight_beta: torch.Tensor,
    weight_diff: torch.Tensor,
    switch_weight: torch.Tensor,
    switch_bias: torch.Tensor,
    pre_weight: torch.Tensor,
    pre_bias: torch.Tensor,
    post_weight: torch.Tensor,
    post_bias: torch.Tensor,
    offset_s_weight: torch.Tensor,
    offset_s_bias: torch.Tensor,
    offset_l_weight: torch.Tensor,
    offset_l_bias: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    deform=None,
) -> torch.Tensor:
    """The deformable SAConv2d forward (mmcv ``SAConv2d(use_deform=True)``): as :func:`sac_conv2d`
    with each branch a :func:`deform_conv2d` (one offset group) whose offsets are 3x3 convolutions
    (18 channels, padding 1, the layer's stride, with bias) of the switch's 5x5 average ``p``.
    The bias, when given, is added once after the blend (mmcv's deformable path drops it).
    ``deform``: the deformable convolution, called as :func:`deform_conv2d` (default: that one;
    pyops.SAConv2d passes pyops.deform_conv2d, the benchmarks torchvision's)."""
    deform = deform_conv2d if deform is None else deform
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    x = x + F.conv2d(F.adaptive_avg_pool2d(x, 1), pre_weight, pre_bias)
    pooled = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel_size=5, stride=1)
    switch = F.conv2d(pooled, switch_weight, switch_bias, stride=stride)
    w = aws_weight(weight, weight_gamma, weight_beta)
    offset_s = F.conv2d(pooled, offset_s_weight, offset_s_bias, stride=stride, padding=1)
    small = deform(x, offset_s, w, None, stride, padding, dilation)
    offset_l = F.conv2d(pooled, offset_l_weight, offset_l_bias, stride=stride, padding=1)
    large = deform(x, offset_l, w + weight_diff, None, stride, tuple(3 * p for p in padding),
                   tuple(3 * d for d in dilation))
    y = switch * small + (1 - switch) * large
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y + F.conv2d(F.adaptive_avg_pool2d(y, 1), post_weight, post_bias)
