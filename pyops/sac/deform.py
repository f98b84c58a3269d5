"""Deformable convolution v1 (Dai et al. 2017), :func:`deform_conv2d`: torchvision's signature,
mmcv's and torchvision's offset layout, and the semantics of :func:`pyops.reference.sac.deform_conv2d`.

Every backend runs the same three steps, for a few images at a time: the deformable im2col
(bilinear samples of the input at the offset positions, ``(C/g * kh * kw, Ho * Wo)`` columns per
image and group), one batched GEMM with the weight (ATen's: oneDNN on the CPU, cuBLAS on the GPU)
and the bias. The backward recomputes the columns and runs the transposed GEMMs, a col2im that
scatters the column gradients to the input (bilinear weights) and a pass that contracts them with
the bilinear slopes into the offset gradient. The sampling arithmetic is ``csrc/sac/deform.h``
(C++ and CUDA) and ``kernels/deform.py`` (Triton).
"""

from __future__ import annotations

import torch

from pyops import _backend, _checks
from pyops import reference as _ref
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops._registry import Op
from pyops.sac._deform_triton import _triton_deform_conv2d, _triton_deform_conv2d_backward

_FN = "deform_conv2d"


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        _checks.fail(_FN, f"{name} must be an int or a pair of ints, got {value!r}", TypeError)
    if min(pair) < minimum:
        _checks.fail(_FN, f"{name} must be >= {minimum}, got {value!r}")
    return pair


def output_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """The output length of a convolution along one axis."""
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def check_args(fn: str, input, offset, weight, bias, stride, padding, dilation) -> tuple[int, int]:
    """Checks :func:`deform_conv2d`'s arguments; returns ``(groups, offset_groups)``."""
    _checks.tensor(fn, "input", input, dims=4, shape="(N, C, H, W)")
    _checks.tensor(fn, "offset", offset, dims=4, shape="(N, 2 * offset_groups * kh * kw, Ho, Wo)")
    _checks.tensor(fn, "weight", weight, dims=4, shape="(out_channels, in_channels / groups, kh, kw)")
    _checks.tensor(fn, "bias", bias, dims=1, shape="(out_channels,)", optional=True)
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != input.dtype or t.device != input.device):
            _checks.fail(fn, f"{name} is {t.dtype} on {t.device} but input is {input.dtype} on {input.device}; "
                             f"offset, weight and bias must have input's dtype and device")
    N, C, H, W = input.shape
    O, Cg, kh, kw = weight.shape
    if Cg < 1 or kh < 1 or kw < 1 or C % Cg:
        _checks.fail(fn, f"weight has shape {tuple(weight.shape)}: its in_channels / groups ({Cg}) must be >= 1 "
                         f"and divide input's {C} channels, and kh, kw >= 1")
    groups = C // Cg
    if O % groups:
        _checks.fail(fn, f"out_channels ({O}) must be divisible by groups ({groups} = input channels {C} / "
                         f"weight.shape[1] {Cg})")
    if bias is not None and tuple(bias.shape) != (O,):
        _checks.fail(fn, f"bias must have shape ({O},), got {tuple(bias.shape)}")
    Ho = output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = output_size(W, kw, stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        _checks.fail(fn, f"the output would be {Ho}x{Wo}: input {H}x{W} is too small for a {kh}x{kw} kernel with "
                         f"padding {padding} and dilation {dilation}")
    K2 = 2 * kh * kw
    Noff, Coff, Hoff, Woff = offset.shape
    if Noff != N or (Hoff, Woff) != (Ho, Wo) or Coff < K2 or Coff % K2 or C % (Coff // K2):
        _checks.fail(fn, f"offset must have shape ({N}, 2 * offset_groups * {kh} * {kw}, {Ho}, {Wo}) with "
                         f"offset_groups dividing the {C} input channels, got {tuple(offset.shape)}")
    return groups, Coff // K2


# ---- the operator: fake kernel and autograd, for every backend ------------------------------------


def _fake_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, groups, offset_groups):
    N, _, Ho, Wo = offset.shape
    return input.new_empty((N, weight.shape[0], Ho, Wo))


def _fake_deform_conv2d_backward(grad_out, input, offset, weight, stride, padding, dilation, groups,
                                 offset_groups):
    return (input.new_empty(input.shape), offset.new_empty(offset.shape), weight.new_empty(weight.shape))


def _setup_context(ctx, inputs, output):
    input, offset, weight, bias, stride, padding, dilation, groups, offset_groups = inputs
    ctx.save_for_backward(input, offset, weight)
    ctx.geometry = (stride, padding, dilation, groups, offset_groups)
    ctx.has_bias = bias is not None


def _make_backward(variant: str):
    backward_op = DEFORM_CONV2D_BACKWARD.variant(variant)

    def backward(ctx, grad_out):
        input, offset, weight = ctx.saved_tensors
        grad_input, grad_offset, grad_weight = backward_op(grad_out, input, offset, weight, *ctx.geometry)
        grad_bias = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_input, grad_offset, grad_weight, grad_bias, None, None, None, None, None

    return backward


DEFORM_CONV2D = Op("deform_conv2d")
DEFORM_CONV2D_BACKWARD = Op("deform_conv2d_backward")
DEFORM_CONV2D.register_triton(_triton_deform_conv2d)
DEFORM_CONV2D_BACKWARD.register_triton(_triton_deform_conv2d_backward)
DEFORM_CONV2D.register_fake(_fake_deform_conv2d)
DEFORM_CONV2D_BACKWARD.register_fake(_fake_deform_conv2d_backward)
DEFORM_CONV2D.register_autograd(_make_backward, setup_context=_setup_context)


# ---- public function ------------------------------------------------------------------------------


@budget(forward=1, backward=2, note="one op each way (im2col + GEMM inside); the bias gradient is one sum")
@accepts_arrays
def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Deformable convolution v1, a drop-in for ``torchvision.ops.deform_conv2d`` without ``mask``
    (and for mmcv's ``deform_conv2d``, whose arguments come in another order).

    Args:
        input: (N, C, H, W), float16/bfloat16/float32/float64, any layout.
        offset: (N, 2 * offset_groups * kh * kw, Ho, Wo), input's dtype: for offset group ``a``
            (a block of C / offset_groups channels) and kernel point ``k = i * kw + j``, channel
            ``2 (a kh kw + k)`` is the row offset dy and the next one the column offset dx.
        weight: (O, C / groups, kh, kw); ``groups = C / weight.shape[1]``.
        bias: (O,) or None.
        stride, padding, dilation: ints or pairs, as for ``torch.nn.functional.conv2d``.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (by device).

    Returns (N, O, Ho, Wo), contiguous. Kernel point ``k`` of output pixel (oy, ox) samples the
    input at ``(oy * stride - padding + i * dilation + dy, ox * stride - padding + j * dilation + dx)``
    bilinearly; corners outside the image read 0 and a point at or beyond one pixel outside
    (y <= -1, y >= H, x <= -1 or x >= W) reads 0. A NaN or infinite offset gives NaN in the
    outputs (and gradients) it reaches. Differentiable in input, offset, weight and bias (first
    order). On CUDA the input gradient is accumulated with atomics, so it is not bitwise
    deterministic (``torch.use_deterministic_algorithms(True)`` raises there, as for torchvision).
    """
    stride = _pair("stride", stride, 1)
    padding = _pair("padding", padding, 0)
    dilation = _pair("dilation", dilation, 1)
    groups, offset_groups = check_args(_FN, input, offset, weight, bias, stride, padding, dilation)
    name = _backend.resolve(_FN, backend, input.device)
    if name == "reference" or input.numel() == 0 or weight.numel() == 0:
        # empty tensors: the reference defines them (zero channels give bias only)
        return _ref.sac.deform_conv2d(input, offset, weight, bias, stride, padding, dilation)
    return DEFORM_CONV2D.kernel(name)(input, offset, weight, bias, list(stride), list(padding), list(dilation),
                                      groups, offset_groups)
