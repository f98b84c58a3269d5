"""The functional switchable atrous convolution :func:`sac_conv2d`, its argument checks and the
choice of the forward algorithm (:func:`default_algorithm`)."""

from __future__ import annotations

import torch

from pyops import _backend
from pyops import reference as _ref
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.sac._ops import _SAC, _SAC_IGEMM

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
