"""PointRend ops: point sampling, uncertainty-guided point selection, subdivision inference,
ROI helpers and Mask2Former's loss-point sampler.

Drop-in for detectron2's ``point_features.py`` / ``point_head`` helpers, mmcv's ``point_sample``
and Mask2Former's sampling lines; the semantics are those of :mod:`pyops.reference.pointrend`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from pyops import _backend, _extension, _selfcheck
from pyops._interop import accepts_arrays
from pyops import reference as _ref

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MASKS = (torch.bool, torch.uint8)  # sampled to float32 (forward only), e.g. ground-truth masks


def _check_point_sample(input: torch.Tensor, coords: torch.Tensor, align_corners: bool) -> None:
    if not isinstance(input, torch.Tensor) or not isinstance(coords, torch.Tensor):
        raise TypeError(
            f"pyops.point_sample: input and coords must be tensors, got "
            f"{type(input).__name__} and {type(coords).__name__}"
        )
    if not isinstance(align_corners, bool):
        raise TypeError(f"pyops.point_sample: align_corners must be a bool, got {align_corners!r}")
    if input.dim() != 4:
        raise ValueError(
            f"pyops.point_sample: input must be a 4-D (N, C, H, W) tensor, got shape {tuple(input.shape)}"
        )
    if coords.dim() not in (3, 4) or coords.shape[-1] != 2:
        raise ValueError(
            f"pyops.point_sample: coords must have shape (N, P, 2) or (N, Hg, Wg, 2), "
            f"got {tuple(coords.shape)}"
        )
    if input.dtype not in _FLOATS + _MASKS:
        raise TypeError(
            f"pyops.point_sample: input must be a floating-point, bool or uint8 tensor, got {input.dtype}"
        )
    if coords.dtype not in _FLOATS:
        raise TypeError(f"pyops.point_sample: coords must be a floating-point tensor, got {coords.dtype}")
    if coords.shape[0] != input.shape[0]:
        raise ValueError(
            f"pyops.point_sample: coords has batch size {coords.shape[0]} but input has {input.shape[0]}"
        )
    if coords.device != input.device:
        raise ValueError(
            f"pyops.point_sample: input is on {input.device} but coords is on {coords.device}"
        )
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(
            f"pyops.point_sample: input must have non-empty spatial dimensions, got shape "
            f"{tuple(input.shape)}"
        )


@accepts_arrays
def point_sample(
    input: torch.Tensor,
    coords: torch.Tensor,
    align_corners: bool = False,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Bilinear samples of a feature map at normalized points (PointRend's ``point_sample``).

    Args:
        input: (N, C, H, W) features, float16/bfloat16/float32/float64, NCHW or channels_last;
            or a bool/uint8 mask, sampled to float32 without a float copy of the mask.
        coords: (N, P, 2) or (N, Hg, Wg, 2) points ``(x, y)`` normalized to ``[0, 1]`` (x first),
            any floating dtype; coordinate math runs in float32 (float64 for float64 inputs).
        align_corners: as in ``F.grid_sample``; ``False`` maps ``u`` to pixel ``u * W - 0.5``.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic, see
            :mod:`pyops._backend`).

    Returns:
        (N, C, P) or (N, C, Hg, Wg) in ``input.dtype`` (float32 for masks). For a channels_last
        input the result is a view of an (N, P, C) / channels_last buffer, as ``grid_sample``
        keeps the input layout.

    Exactly ``F.grid_sample(input, 2 * coords - 1, mode="bilinear", padding_mode="zeros",
    align_corners=align_corners)`` (with the extra grid dimension for (N, P, 2) coords):
    corners outside the map read as zero, and a NaN or infinite coordinate gives NaN.
    Differentiable with respect to ``input`` and ``coords``; the gradient to ``input`` is
    deterministic (bit-identical across runs) on every backend but ``"reference"``.
    """
    _check_point_sample(input, coords, align_corners)
    if coords.dim() == 4:
        out = _point_sample(input, coords.reshape(coords.shape[0], -1, 2), align_corners, None, backend)
        return out.view(*out.shape[:2], *coords.shape[1:3])
    return _point_sample(input, coords, align_corners, None, backend)


def _point_sample(input, coords, align_corners, batch_index, backend):
    """point_sample of (N, P, 2) coords, row n sampling image ``batch_index[n]`` (or n)."""
    name = _backend.resolve("point_sample", backend, input.device)
    if name == "reference":
        return _ref.point_sample(input if batch_index is None else input[batch_index], coords, align_corners)
    op = torch.ops.pyops.point_sample_triton if name == "triton" else torch.ops.pyops.point_sample
    return op(input, coords, align_corners, batch_index)


# ---- point selection ---------------------------------------------------------------------------

calculate_uncertainty = _ref.calculate_uncertainty
calculate_uncertainty_sem_seg = _ref.calculate_uncertainty_sem_seg
generate_regular_grid_point_coords = _ref.generate_regular_grid_point_coords
get_uncertain_point_coords_on_grid = _ref.get_uncertain_point_coords_on_grid
get_point_coords_wrt_image = _ref.get_point_coords_wrt_image


def _fused_channel(uncertainty_func, classes):
    """(True, classes) when ``uncertainty_func`` is -|logit| of one channel per row, which the fused
    kernels compute; (False, None) for any other function (the generic path)."""
    f = uncertainty_func
    if f is None or f is calculate_uncertainty:
        return True, classes
    if isinstance(f, functools.partial) and f.func is calculate_uncertainty and not f.args and set(f.keywords) <= {"classes"}:
        return True, f.keywords.get("classes", classes)
    return False, None


def _check_logits(name: str, logits: torch.Tensor, dims: int = 4) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != dims or not logits.is_floating_point():
        shape = "(R, C, H, W)" if dims == 4 else "(R, h, w)"
        got = f"{logits.dtype} tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"pyops.{name}: logits must be a floating-point {shape} tensor, got {got}")
    if logits.shape[-1] == 0 or logits.shape[-2] == 0:
        raise ValueError(f"pyops.{name}: logits must have non-empty spatial dimensions, got {tuple(logits.shape)}")


def _random_seed(device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """A Philox seed drawn from the torch generator (no host synchronisation on CUDA)."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device, generator=generator)


@accepts_arrays
def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor] | None,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    *,
    classes: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """PointRend's training-time point selection (detectron2's signature), returns (R, num_points, 2).

    Draws ``int(num_points * oversample_ratio)`` uniform candidates per row, samples the logits at
    them, keeps the ``int(importance_sample_ratio * num_points)`` most uncertain and appends fresh
    uniform points. Order within a row is unspecified (the set is the contract).

    Fast path: ``uncertainty_func`` ``None``, :func:`calculate_uncertainty`, or
    ``functools.partial(calculate_uncertainty, classes=...)`` (``-|logit|`` of one channel, chosen per
    row by ``classes`` when C > 1): one kernel draws the candidates (Philox, seeded from the torch
    generator, so ``torch.manual_seed`` reproduces them), samples only that channel and scores them;
    a top-k selection and a second kernel pick the points. Any other callable runs the reference
    composition. ``candidates`` (R, num_sampled, 2) float32 replaces the random candidates.
    """
    _check_logits("get_uncertain_point_coords_with_randomness", coarse_logits)
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"pyops.get_uncertain_point_coords_with_randomness: num_points must be an int >= 1, got {num_points!r}")
    if not oversample_ratio >= 1:
        raise ValueError(f"pyops.get_uncertain_point_coords_with_randomness: oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"pyops.get_uncertain_point_coords_with_randomness: importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    R, C = coarse_logits.shape[:2]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    if candidates is not None and (candidates.shape != (R, num_sampled, 2) or candidates.dtype != torch.float32):
        raise ValueError(
            f"pyops.get_uncertain_point_coords_with_randomness: candidates must be float32 of shape "
            f"({R}, {num_sampled}, 2), got {candidates.dtype} {tuple(candidates.shape)}"
        )
    fused, classes = _fused_channel(uncertainty_func, classes)
    name = _backend.resolve("uncertain_point_coords", backend, coarse_logits.device)
    if not fused or name == "reference":
        func = uncertainty_func if uncertainty_func is not None else functools.partial(calculate_uncertainty, classes=classes)
        return _ref.get_uncertain_point_coords_with_randomness(
            coarse_logits, func, num_points, oversample_ratio, importance_sample_ratio, candidates, generator
        )
    if C > 1:
        if classes is None:
            raise ValueError(f"pyops.get_uncertain_point_coords_with_randomness: logits has {C} channels: pass classes")
        classes = torch.as_tensor(classes, device=coarse_logits.device).long()
        if classes.shape != (R,):
            raise ValueError(f"pyops.get_uncertain_point_coords_with_randomness: classes must have shape ({R},), got {tuple(classes.shape)}")
        if R and (classes.min() < 0 or classes.max() >= C):
            raise ValueError(
                f"pyops.get_uncertain_point_coords_with_randomness: classes must lie in [0, {C}), "
                f"got values from {classes.min().item()} to {classes.max().item()}"
            )
    else:
        classes = None
    op = torch.ops.pyops.uncertain_point_coords_triton if name == "triton" else torch.ops.pyops.uncertain_point_coords
    seed = _random_seed(coarse_logits.device, generator)
    return op(coarse_logits, classes, candidates, seed, num_points, num_sampled, num_uncertain)


# ---- subdivision inference --------------------------------------------------------------------


@accepts_arrays
def subdivision_step(logits: torch.Tensor, num_points: int, *, backend: str | None = None):
    """One fused subdivision step on one channel per row: 2x bilinear upsample
    (``align_corners=False``) of (R, h, w) logits, uncertainty ``-|logit|``, selection of the
    ``P = min(num_points, 4hw)`` most uncertain cells. Returns (upsampled (R, 2h, 2w),
    flat indices (R, P) int64, cell-centre coords (R, P, 2) float32); order within a row is
    unspecified."""
    _check_logits("subdivision_step", logits, dims=3)
    if not isinstance(num_points, int) or num_points < 1:
        raise ValueError(f"pyops.subdivision_step: num_points must be an int >= 1, got {num_points!r}")
    name = _backend.resolve("subdivision_step", backend, logits.device)
    if name == "reference":
        return _ref.subdivision_step(logits, num_points)
    op = torch.ops.pyops.subdivision_step_triton if name == "triton" else torch.ops.pyops.subdivision_step
    return op(logits, num_points)


def _select_channel(logits: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """(R, C, ...) -> (R, ...): channel classes[r] of row r (the only channel when C == 1)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    if classes is None:
        raise ValueError(f"pyops.subdivision_inference: logits have {logits.shape[1]} channels: pass classes")
    return logits[torch.arange(logits.shape[0], device=logits.device), classes]


def subdivision_inference(
    coarse_logits: torch.Tensor,
    point_head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    classes: torch.Tensor | None = None,
    num_steps: int = 5,
    num_points: int = 784,
    backend: str | None = None,
) -> torch.Tensor:
    """PointRend's mask inference: ``num_steps`` rounds of 2x upsampling, selection of the
    ``num_points`` most uncertain cells, re-prediction there by ``point_head`` and scatter back.

    Only the predicted class's channel is refined (``classes`` (R,) picks it when C > 1), so memory
    does not grow with the number of classes, unlike detectron2's loop which upsamples them all.
    ``point_head(coords (R, P, 2), indices (R, P))`` returns the logits at the points: (R, P), or
    (R, C', P) with C' = 1 or C' = C (the chosen channel is taken). A step is skipped (plain
    upsampling) when the next resolution would have at most ``num_points`` cells, as detectron2
    does. Returns (R, 1, h * 2**num_steps, w * 2**num_steps).
    """
    _check_logits("subdivision_inference", coarse_logits)
    logits = _select_channel(coarse_logits, classes)
    for step in range(num_steps):
        h, w = logits.shape[1:]
        if num_points >= 16 * h * w and step < num_steps - 1:
            logits = F.interpolate(logits.unsqueeze(1), scale_factor=2, mode="bilinear", align_corners=False).squeeze(1)
            continue
        up, indices, coords = subdivision_step(logits, num_points, backend=backend)
        point_logits = point_head(coords, indices)
        if point_logits.dim() == 3:
            point_logits = _select_channel(point_logits, classes)
        logits = up.flatten(1).scatter(1, indices, point_logits.to(up.dtype)).view_as(up)
    return logits.unsqueeze(1)


# ---- ROI helpers ------------------------------------------------------------------------------


@accepts_arrays
def point_sample_fine_grained_features(
    features_list: Sequence[torch.Tensor],
    feature_scales: Sequence[float],
    boxes: Sequence,
    point_coords: torch.Tensor,
    *,
    backend: str | None = None,
):
    """detectron2's ``point_sample_fine_grained_features``: features of every level at ROI points.

    Args:
        features_list: per level, (B, C_l, H_l, W_l) features of the B images.
        feature_scales: per level, 1 / stride (a level of stride s is sampled at ``x_img / s - 0.5``).
        boxes: per image, its ROIs as an (R_i, 4) tensor or an object with ``.tensor``
            (detectron2 ``Boxes``), ``(x0, y0, x1, y1)`` in image pixels.
        point_coords: (R, P, 2) points normalized to each ROI, R = sum R_i.

    Returns:
        ((R, sum C_l, P) features, (R, P, 2) points in image coordinates). All images are
        sampled in one launch per level.
    """
    name = "pyops.point_sample_fine_grained_features"
    boxes = [b.tensor if hasattr(b, "tensor") else b for b in boxes]
    if not features_list or len(features_list) != len(feature_scales):
        raise ValueError(f"{name}: need one scale per feature level, got {len(features_list)} levels and {len(feature_scales)} scales")
    if sum(len(b) for b in boxes) != point_coords.shape[0]:
        raise ValueError(f"{name}: point_coords has {point_coords.shape[0]} rows but boxes hold {sum(len(b) for b in boxes)} ROIs")
    image_coords = get_point_coords_wrt_image(torch.cat(boxes), point_coords)
    counts = torch.tensor([len(b) for b in boxes], device=point_coords.device)
    batch_index = torch.repeat_interleave(
        torch.arange(len(boxes), device=point_coords.device), counts, output_size=point_coords.shape[0]
    )
    levels = []
    for feature_map, scale in zip(features_list, feature_scales):
        h, w = feature_map.shape[-2:]
        if feature_map.dim() != 4 or feature_map.shape[0] != len(boxes):
            raise ValueError(
                f"{name}: each feature map must be (B, C, H, W) with B = {len(boxes)} images, got {tuple(feature_map.shape)}"
            )
        normalized = image_coords * (scale / torch.tensor([w, h], dtype=image_coords.dtype, device=image_coords.device))
        levels.append(_point_sample(feature_map, normalized, False, batch_index, backend))
    return torch.cat(levels, dim=1), image_coords


# ---- Mask2Former ------------------------------------------------------------------------------


@accepts_arrays
def sample_points_for_loss(
    mask_logits: torch.Tensor,
    gt_masks: torch.Tensor,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    *,
    generator: torch.Generator | None = None,
    backend: str | None = None,
):
    """Mask2Former's ``loss_masks`` point sampling in one call.

    Args:
        mask_logits: (R, 1, h, w) or (R, h, w) predicted mask logits of the matched queries.
        gt_masks: (R, H, W) ground-truth masks, bool, uint8 or float, at any resolution; bool and
            uint8 masks are sampled directly, without a float copy of the masks.

    Returns:
        (point_coords (R, N, 2), point_logits (R, N) differentiable to ``mask_logits``,
        point_labels (R, N) float32 bilinear samples of the masks).
    """
    if mask_logits.dim() == 3:
        mask_logits = mask_logits.unsqueeze(1)
    _check_logits("sample_points_for_loss", mask_logits)
    if gt_masks.dim() != 3 or gt_masks.shape[0] != mask_logits.shape[0]:
        raise ValueError(
            f"pyops.sample_points_for_loss: gt_masks must be (R, H, W) with R = {mask_logits.shape[0]}, "
            f"got {tuple(gt_masks.shape)}"
        )
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            mask_logits.detach(), None, num_points, oversample_ratio, importance_sample_ratio,
            generator=generator, backend=backend,
        )
        labels = point_sample(gt_masks.unsqueeze(1), coords, backend=backend).squeeze(1)
    logits = point_sample(mask_logits, coords, backend=backend).squeeze(1)
    return coords, logits, labels.float()


# ---- kernels of the pyops::*_triton operators (schemas in csrc/ops.cpp) -----------------------
# Registered for CUDA tensors, and for CPU tensors so the Triton interpreter can run them in tests.
# pyops.kernels (and triton) are imported on first use only.

def _opmath(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _point_values(input: torch.Tensor, N: int, P: int) -> torch.Tensor:
    # Same layout rule as the C++ kernels (point_sample_host.h: new_point_values).
    C = input.shape[1]
    dtype = input.dtype if input.is_floating_point() else torch.float32
    if C > 1 and input.stride(1) == 1:
        return input.new_empty((N, P, C), dtype=dtype).transpose(1, 2)
    return input.new_empty((N, C, P), dtype=dtype)


def _triton_point_sample(input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    out = _point_values(input, coords.shape[0], coords.shape[1])
    if out.numel():
        k.forward(input, coords.to(_opmath(input)).contiguous(), _contiguous(batch_index), out, align_corners)
    return out


def _triton_backward_input(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    grad_input = torch.zeros_like(input)
    if grad.numel():
        coords_m = coords.to(_opmath(input)).contiguous()
        k.input_grad(coords_m, _contiguous(batch_index), grad, grad_input, align_corners)
    return grad_input


def _triton_backward_coords(grad, input, coords, align_corners, batch_index=None):
    from pyops.kernels import point_sample as k

    coords_m = coords.to(_opmath(input)).contiguous()
    grad_coords = torch.zeros_like(coords_m)
    if grad_coords.numel():
        k.coords_grad(input, coords_m, _contiguous(batch_index), grad, grad_coords, align_corners)
    return grad_coords.to(coords.dtype)


def _contiguous(t):
    return None if t is None else t.contiguous()


def _triton_uncertain_point_coords(logits, classes, candidates, seed, num_points, num_candidates, num_uncertain):
    from pyops.kernels import point_select as k

    R = logits.shape[0]
    out = logits.new_empty((R, num_points, 2), dtype=torch.float32)
    if R == 0:
        return out
    drawn = logits.new_empty((R, num_candidates, 2), dtype=torch.float32) if candidates is None else candidates.contiguous()
    uncertainty = logits.new_empty((R, num_candidates), dtype=torch.float32)
    k.score_candidates(logits, _contiguous(classes), None if candidates is None else drawn, drawn, uncertainty, seed)
    top = torch.topk(uncertainty, num_uncertain, dim=1, sorted=False).indices.contiguous()
    k.pick_points(drawn, top, out, seed)
    return out


def _triton_subdivision_step(logits, num_points):
    from pyops.kernels import point_select as k

    R, h, w = logits.shape
    P = min(num_points, 4 * h * w)
    up = logits.new_empty((R, 2 * h, 2 * w))
    uncertainty = logits.new_empty((R, 4 * h * w), dtype=torch.float32)
    coords = logits.new_empty((R, P, 2), dtype=torch.float32)
    if R == 0:
        return up, logits.new_empty((0, P), dtype=torch.int64), coords
    k.upsample2x(logits, up, uncertainty)
    indices = torch.topk(uncertainty, P, dim=1, sorted=False).indices.contiguous()
    k.grid_points(indices, coords, 2 * h, 2 * w)
    return up, indices, coords


# ---- fake kernels and autograd of the torch.ops.pyops operators -------------------------------


def _fake_point_sample(input, coords, align_corners, batch_index=None):
    return _point_values(input, coords.shape[0], coords.shape[1])


def _fake_backward_input(grad, input, coords, align_corners, batch_index=None):
    return torch.empty_like(input)


def _fake_backward_coords(grad, input, coords, align_corners, batch_index=None):
    return coords.new_empty(coords.shape)


def _fake_uncertain_point_coords(logits, classes, candidates, seed, num_points, num_candidates, num_uncertain):
    return logits.new_empty((logits.shape[0], num_points, 2), dtype=torch.float32)


def _fake_subdivision_step(logits, num_points):
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


def _make_backward(suffix: str):
    grad_input_op = getattr(torch.ops.pyops, "point_sample_backward_input" + suffix)
    grad_coords_op = getattr(torch.ops.pyops, "point_sample_backward_coords" + suffix)

    def backward(ctx, grad):
        input, coords, batch_index = ctx.saved_tensors
        grad_input = grad_coords = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_input_op(grad, input, coords, ctx.align_corners, batch_index)
        if ctx.needs_input_grad[1]:
            grad_coords = grad_coords_op(grad, input, coords, ctx.align_corners, batch_index)
        return grad_input, grad_coords, None, None

    return backward


if _extension.available():
    torch.library.register_kernel("pyops::point_sample_triton", ("cpu", "cuda"), _triton_point_sample)
    torch.library.register_kernel("pyops::point_sample_backward_input_triton", ("cpu", "cuda"), _triton_backward_input)
    torch.library.register_kernel("pyops::point_sample_backward_coords_triton", ("cpu", "cuda"), _triton_backward_coords)
    torch.library.register_kernel("pyops::uncertain_point_coords_triton", ("cpu", "cuda"), _triton_uncertain_point_coords)
    torch.library.register_kernel("pyops::subdivision_step_triton", ("cpu", "cuda"), _triton_subdivision_step)
    for _suffix in ("", "_triton"):
        torch.library.register_fake(f"pyops::uncertain_point_coords{_suffix}")(_fake_uncertain_point_coords)
        torch.library.register_fake(f"pyops::subdivision_step{_suffix}")(_fake_subdivision_step)
        torch.library.register_fake(f"pyops::point_sample{_suffix}")(_fake_point_sample)
        torch.library.register_fake(f"pyops::point_sample_backward_input{_suffix}")(_fake_backward_input)
        torch.library.register_fake(f"pyops::point_sample_backward_coords{_suffix}")(_fake_backward_coords)
        torch.library.register_autograd(
            f"pyops::point_sample{_suffix}", _make_backward(_suffix), setup_context=_setup_context
        )


# ---- self-check for `python -m pyops` ---------------------------------------------------------


def _point_sample_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    x = torch.randn(2, 5, 9, 13, generator=gen, dtype=dtype).to(device)
    # a little outside [0, 1] so the zero padding is exercised too
    coords = (torch.rand(2, 37, 2, generator=gen, dtype=dtype) * 1.2 - 0.1).to(device)
    return x, coords


def _sorted_by_x(points: torch.Tensor) -> torch.Tensor:
    return torch.gather(points, 1, points[..., 0].argsort(dim=1).unsqueeze(-1).expand(-1, -1, 2))


def _selection_inputs(device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    logits = torch.randn(3, 1, 12, 10, generator=gen, dtype=dtype).to(device)
    return logits, torch.rand(3, 48, 2, generator=gen).to(device)


def _selected(select, logits, candidates, **kwargs):
    # importance 1: no random tail, so the result is the (ordered) set of chosen candidates
    return _sorted_by_x(select(logits, calculate_uncertainty, 16, 3.0, 1.0, candidates=candidates, **kwargs))


def _step_summary(up, indices):
    """Upsampled map and the sorted uncertainties of the chosen cells (tie-independent)."""
    chosen = (-up.abs()).flatten(1).gather(1, indices)
    return torch.cat([up.flatten(1), chosen.sort(dim=1).values], dim=1)


_selfcheck.register(
    _selfcheck.OpCheck(
        name="point_sample",
        make_inputs=_point_sample_inputs,
        run=lambda x, c, backend: point_sample(x, c, backend=backend),
        reference=lambda x, c: _ref.point_sample(x, c),
    )
)
_selfcheck.register(
    _selfcheck.OpCheck(
        name="uncertain_points",
        make_inputs=_selection_inputs,
        run=lambda l, c, backend: _selected(get_uncertain_point_coords_with_randomness, l, c, backend=backend),
        reference=lambda l, c: _selected(_ref.get_uncertain_point_coords_with_randomness, l, c),
        differentiable=False,
    )
)
_selfcheck.register(
    _selfcheck.OpCheck(
        name="subdivision_step",
        make_inputs=lambda device, dtype, gen: (torch.randn(4, 7, 9, generator=gen, dtype=dtype).to(device),),
        run=lambda l, backend: _step_summary(*subdivision_step(l, 50, backend=backend)[:2]),
        reference=lambda l: _step_summary(*_ref.subdivision_step(l, 50)[:2]),
        differentiable=False,
    )
)
