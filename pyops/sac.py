"""Switchable atrous convolution (DetectoRS): :class:`SAConv2d` and the functional
:func:`sac_conv2d`, with the semantics of :mod:`pyops.reference.sac` (``shared/specs/sac.md``).

Backends: ``"cpu"`` (C++), ``"cuda"`` (CUDA C++), ``"triton"``, ``"reference"``. Each of the
first three runs the forward by one of two algorithms (``algorithm=``):

``"composition"``  two library convolutions (cuDNN on GPU) plus fused kernels for everything
                   else: AWS, the two contexts, the switch pre-pass and pooling, the blend
``"igemm"``        one dual-accumulator implicit-GEMM kernel for both convolutions and the blend:
                   one output tile, two accumulators (dilation d and 3d taps), the epilogue writes
                   the blend (CUDA: WMMA tensor cores for float16/bfloat16; Triton: ``tl.dot``;
                   CPU: a direct convolution)

Both share the switch pre-pass, AWS, the post-context and the backward (the composition's:
library convolution backward plus fused kernels). The C++/CUDA steps are in
``csrc/sac/sac_host.h``, the Triton ones mirror them step for step. At the spec's shapes the
layer is launch-bound, so the steps are few: about a dozen calls forward, two dozen backward.
:func:`default_algorithm` is the one place that picks the default.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pyops import _backend, _checks, _scripting, _selfcheck
from pyops._budget import budget
from pyops._registry import Op
from pyops._interop import accepts_arrays
from pyops import reference as _ref
from pyops.reference.sac import AWS_EPS

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ALGORITHMS = ("composition", "igemm")

# The forward algorithm of each backend when none is chosen. "composition" everywhere: on an H200
# (benchmarks/results/h200-run2, bf16 channels_last) the igemm forward is 2-13x slower than the
# composition at the spec's shapes, and on CPU its direct convolution is slower than oneDNN's.
DEFAULT_ALGORITHMS: dict[str, str] = {"cpu": "composition", "cuda": "composition", "triton": "composition"}


def default_algorithm(backend: str, x_shape, weight_shape, stride, dilation, groups: int) -> str:
    """The forward algorithm (``"composition"`` or ``"igemm"``) of ``backend`` for this shape:
    today one entry per backend (:data:`DEFAULT_ALGORITHMS`); shape rules go here."""
    return DEFAULT_ALGORITHMS.get(backend, "composition")


def _check_algorithm(algorithm, where: str) -> None:
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise ValueError(f"{where}: algorithm must be one of {ALGORITHMS} or None, got {algorithm!r}")


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"pyops.sac_conv2d: {name} must be an int or a pair of ints, got {value!r}")


def _check_geometry(C: int, weight_shape, stride, padding, dilation, groups: int, where: str) -> None:
    O = weight_shape[0]
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where}: groups must be an int >= 1, got {groups!r}")
    if C % groups or O % groups:
        raise ValueError(f"{where}: in_channels ({C}) and out_channels ({O}) must be divisible by groups ({groups})")
    if weight_shape[1] * groups != C:
        raise ValueError(
            f"{where}: weight has shape {tuple(weight_shape)}, i.e. {weight_shape[1]} input channels per "
            f"group, but x has {C} channels and groups = {groups} (expected weight.shape[1] = {C // groups})"
        )
    for d in range(2):
        k = weight_shape[2 + d]
        if stride[d] < 1 or dilation[d] < 1:
            raise ValueError(f"{where}: stride and dilation must be >= 1, got {stride} and {dilation}")
        if k % 2 != 1 or 2 * padding[d] != dilation[d] * (k - 1):
            raise ValueError(
                f"{where}: needs odd kernel sizes and padding = dilation * (kernel_size - 1) / 2 so that "
                f"both branches keep the switch's output size; got kernel size {tuple(weight_shape[2:])}, "
                f"padding {padding}, dilation {dilation}"
            )


def _check_args(x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
                pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups):
    where = "pyops.sac_conv2d"
    named = dict(
        x=x, weight=weight, weight_gamma=weight_gamma, weight_beta=weight_beta, weight_diff=weight_diff,
        switch_weight=switch_weight, switch_bias=switch_bias, pre_weight=pre_weight, pre_bias=pre_bias,
        post_weight=post_weight, post_bias=post_bias,
    )
    if bias is not None:
        named["bias"] = bias
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{where}: x must be a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{where}: x must be a floating-point tensor, got {x.dtype}")
    if weight.dim() != 4:
        raise ValueError(f"{where}: weight must be 4-D (out_channels, in_channels / groups, kh, kw), got shape {tuple(weight.shape)}")
    N, C, H, W = x.shape
    O = weight.shape[0]
    _check_geometry(C, weight.shape, stride, padding, dilation, groups, where)
    if H < 3 or W < 3:
        raise ValueError(f"{where}: x must be at least 3x3 (the switch reflect-pads by 2), got shape {tuple(x.shape)}")
    shapes = dict(
        weight_gamma=(O, 1, 1, 1), weight_beta=(O, 1, 1, 1), weight_diff=tuple(weight.shape),
        switch_weight=(1, C, 1, 1), switch_bias=(1,), pre_weight=(C, C, 1, 1), pre_bias=(C,),
        post_weight=(O, O, 1, 1), post_bias=(O,), bias=(O,),
    )
    for name, t in named.items():
        if name in shapes and tuple(t.shape) != shapes[name]:
            raise ValueError(f"{where}: {name} must have shape {shapes[name]}, got {tuple(t.shape)}")
        if t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{where}: {name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}; every "
                f"parameter must have x's dtype and device"
            )


@budget(forward=1, backward=1, note="one fused composition op (two library convolutions and ~6 kernels inside) each way")
@accepts_arrays
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
    *,
    backend: str | None = None,
    algorithm: str | None = None,
) -> torch.Tensor:
    """The switchable atrous convolution layer of DetectoRS, forward and backward fused.

    ``y = S * conv(x', AWS(W), d) + (1 - S) * conv(x', AWS(W) + weight_diff, 3d) + bias`` with
    ``x' = x + PreCtx(GAP(x))`` and the switch ``S = Conv1x1(AvgPool5(ReflectPad2(x')))`` (no
    sigmoid), then ``out = y + PostCtx(GAP(y))``. See :mod:`pyops.reference.sac` for shapes.

    Args:
        x: (N, C, H, W), H, W >= 3, float16/bfloat16/float32/float64, NCHW or channels_last (the
            output keeps the layout). Every parameter must have x's dtype and device.
        padding: must be ``dilation * (kernel_size - 1) / 2`` (odd kernels), so that the dilation
            ``3 * dilation`` branch (padding ``3 * padding``) has the same size as the switch.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic).
        algorithm: the forward of the C++/CUDA/Triton backends, ``"composition"``, ``"igemm"``
            or ``None`` (:func:`default_algorithm`); ignored by ``"reference"``.

    Differentiable with respect to every tensor argument (``weight_gamma``/``weight_beta`` too,
    although :class:`SAConv2d` keeps them as buffers). The bias is added once after the blend.
    Zero input channels give ``bias + PostCtx(bias)`` at every pixel (a convolution over no
    channels is 0), zero output channels an empty (N, 0, Ho, Wo) output.
    """
    stride, padding, dilation = _pair("stride", stride), _pair("padding", padding), _pair("dilation", dilation)
    _check_algorithm(algorithm, "pyops.sac_conv2d")
    _check_args(x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
                pre_weight, pre_bias, post_weight, post_bias, bias, stride, padding, dilation, groups)
    name = _backend.resolve("sac_conv2d", backend, x.device)
    args = (x, weight, weight_gamma, weight_beta, weight_diff, switch_weight, switch_bias,
            pre_weight, pre_bias, post_weight, post_bias, bias)
    # Empty channels (C = 0 or O = 0): the convolutions contribute nothing, out = bias +
    # PostCtx(bias) (an empty output for O = 0), defined here as in the reference; the kernels
    # need C, O >= 1 (and assert it)
    if name == "reference" or x.shape[1] == 0 or weight.shape[0] == 0:
        return _ref.sac_conv2d(*args, stride, padding, dilation, groups)
    if algorithm is None:
        algorithm = default_algorithm(name, x.shape, weight.shape, stride, dilation, groups)
    op = _SAC_IGEMM if algorithm == "igemm" else _SAC
    return op.kernel(name)(*args, list(stride), list(padding), list(dilation), groups)[0]


class SAConv2d(nn.Conv2d):
    """Switchable atrous convolution (DetectoRS), a drop-in for mmcv's ``SAConv2d`` (``SAC``).

    Parameters and buffers carry mmcv's names (``weight``, ``bias``, ``weight_gamma``,
    ``weight_beta``, ``weight_diff``, ``switch.*``, ``pre_context.*``, ``post_context.*``), so an
    mmcv / mmdetection / DetectoRS state_dict loads unchanged. Initialisation: the switch is
    weight 0, bias 1 (so ``S == 1``), ``weight_diff`` is 0 and both context convs are 0: the layer
    then equals a plain convolution with weight ``weight``.

    Checkpoint loading follows AWS: a state_dict without ``weight_gamma``/``weight_beta`` (a plain
    ``nn.Conv2d`` one) sets ``beta = mean_o(W)`` and ``gamma = sqrt(var_o(W) + 1e-5)`` so the
    standardised weight equals ``W`` exactly; the switch, ``weight_diff`` and the contexts are
    then reset to their initial values (if the checkpoint lacks them) and not reported missing,
    so the loaded layer equals that convolution.

    The bias is added once, after the blend (the original DetectoRS code adds it in both branches,
    which is the same; mmcv on torch >= 1.8 drops it, which differs only for a non-zero bias).
    Fan-in 1 (``in_channels / groups * kh * kw == 1``): the variance of a single weight is taken
    as 0 (mmcv's unbiased variance is NaN there), so the standardised weight is 0 and
    ``AWS(W) = weight_beta``, in every backend and in :mod:`pyops.reference`.
    ``use_deform=True`` is not implemented and raises ``NotImplementedError``.
    ``backend`` picks the backend of every call (``None``: by device, see :mod:`pyops._backend`)
    and ``algorithm`` the forward algorithm (``None``: :func:`default_algorithm`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, use_deform: bool = False, *, backend: str | None = None,
                 algorithm: str | None = None):
        if use_deform:
            raise NotImplementedError(
                "pyops.SAConv2d: use_deform=True (the deformable-offset variant) is not implemented; "
                "only use_deform=False is supported"
            )
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            _checks.integer("SAConv2d", name, value, min=0)
        groups = _checks.integer("SAConv2d", "groups", groups, min=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"pyops.SAConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        _check_geometry(in_channels, self.weight.shape, self.stride, self.padding, self.dilation, groups,
                        "pyops.SAConv2d")
        _backend._validate(backend)
        _check_algorithm(algorithm, "pyops.SAConv2d")
        self.backend = backend
        self.algorithm = algorithm
        self.use_deform = False
        self.register_buffer("weight_gamma", torch.ones(out_channels, 1, 1, 1))
        self.register_buffer("weight_beta", torch.zeros(out_channels, 1, 1, 1))
        self.switch = nn.Conv2d(in_channels, 1, kernel_size=1, stride=stride, bias=True)
        self.weight_diff = nn.Parameter(torch.empty_like(self.weight))
        self.pre_context = nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=True)
        self.post_context = nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=True)
        self.init_sac()
        self.register_load_state_dict_post_hook(_post_load_hook)

    @torch.no_grad()
    def init_sac(self) -> None:
        """Reset the switch (S == 1), weight_diff and both contexts (0) to their initial values."""
        self.switch.weight.zero_()
        self.switch.bias.fill_(1.0)
        self.weight_diff.zero_()
        for conv in (self.pre_context, self.post_context):
            conv.weight.zero_()
            conv.bias.zero_()

    @budget(forward=1, backward=1)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (see pyops._scripting)
            return _scripting.sac_conv2d(
                x, self.weight, self.weight_gamma, self.weight_beta, self.weight_diff, self.switch.weight,
                self.switch.bias, self.pre_context.weight, self.pre_context.bias, self.post_context.weight,
                self.post_context.bias, self.bias, [self.stride[0], self.stride[1]],
                [self.padding[0], self.padding[1]], [self.dilation[0], self.dilation[1]], self.groups, self.backend, self.algorithm)
        _checks.tensor("SAConv2d", "x", x, dims=None, dtypes=None)
        params = [
            self.weight, self.weight_gamma, self.weight_beta, self.weight_diff,
            self.switch.weight, self.switch.bias, self.pre_context.weight, self.pre_context.bias,
            self.post_context.weight, self.post_context.bias, self.bias,
        ]
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # run in the autocast dtype, like nn.Conv2d
            dtype = torch.get_autocast_dtype(device_type)
            x = x.to(dtype)
            params = [p.to(dtype) if p is not None else None for p in params]
            with torch.autocast(device_type, enabled=False):  # the kernels pick their own precision
                return sac_conv2d(x, *params, *geometry, backend=self.backend, algorithm=self.algorithm)
        return sac_conv2d(x, *params, *geometry, backend=self.backend, algorithm=self.algorithm)

    # AWS checkpoint rule: gamma is set to -1 before loading; a positive mean afterwards means
    # the checkpoint carried gamma/beta. Otherwise recover them from the loaded weight.
    _SAC_KEYS = ("weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
                 "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self.weight_gamma.data.fill_(-1)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._recovered_prefix = None
        if self.weight_gamma.data.mean() > 0:
            return
        with torch.no_grad():
            flat = self.weight.data.flatten(1)
            self.weight_beta.data.copy_(flat.mean(dim=1).view(-1, 1, 1, 1))
            self.weight_gamma.data.copy_(torch.sqrt(_ref.sac.aws_variance(flat) + AWS_EPS).view(-1, 1, 1, 1))
            self.init_sac()  # the child convs load after this, from the checkpoint if it has them
        self._recovered_prefix = prefix

    def _drop_recovered_keys(self, incompatible_keys) -> None:
        prefix = getattr(self, "_recovered_prefix", None)
        if prefix is None:
            return
        self._recovered_prefix = None
        for key in self._SAC_KEYS:
            while prefix + key in incompatible_keys.missing_keys:
                incompatible_keys.missing_keys.remove(prefix + key)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", use_deform=False"


def _post_load_hook(module, incompatible_keys):
    module._drop_recovered_keys(incompatible_keys)


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


# ---- fake kernels and autograd ----------------------------------------------------------------


def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _format(x: torch.Tensor) -> torch.memory_format:
    # same rule as csrc/sac/sac_host.h: use_channels_last
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


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


# ---- self-check for `python -m pyops` ---------------------------------------------------------


def random_parameters(C: int, O: int, k: int = 3, groups: int = 1, bias: bool = True, *,
                      dtype=torch.float32, device="cpu", generator: torch.Generator | None = None):
    """Random (non-initial) parameters of :func:`sac_conv2d` in argument order, for tests and
    benchmarks: a switch that varies around 0.5, a non-zero weight_diff and contexts."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def r(*shape, scale=1.0, offset=0.0):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset).to(device=device, dtype=dtype)

    fan_in = max(C // groups * k * k, 1)  # (empty channels: any scale)
    return (
        r(O, C // groups, k, k, scale=fan_in ** -0.5),
        r(O, 1, 1, 1, scale=0.2, offset=1.0),
        r(O, 1, 1, 1, scale=0.02),
        r(O, C // groups, k, k, scale=0.5 * fan_in ** -0.5),
        r(1, C, 1, 1, scale=max(C, 1) ** -0.5),
        r(1, scale=0.1, offset=0.5),
        r(C, C, 1, 1, scale=0.5 * max(C, 1) ** -0.5),
        r(C, scale=0.1),
        r(O, O, 1, 1, scale=0.5 * max(O, 1) ** -0.5),
        r(O, scale=0.1),
        r(O, scale=0.1) if bias else None,
    )


def _selfcheck_inputs(device, dtype, gen):
    x = torch.randn(2, 6, 9, 11, generator=gen, dtype=dtype).to(device)
    return (x, *random_parameters(6, 4, generator=gen, dtype=dtype, device=device)[:10])


_selfcheck.register(
    _selfcheck.OpCheck(
        name="sac_conv2d",
        make_inputs=_selfcheck_inputs,
        run=lambda *a, backend: sac_conv2d(*a, None, 2, 1, 1, backend=backend),
        reference=lambda *a: _ref.sac_conv2d(*a, None, 2, 1, 1),
    )
)
