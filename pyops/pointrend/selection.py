"""Uncertainty-guided point selection (training), subdivision inference, and Mask2Former's
loss-point sampler."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pyops import _backend, _checks
from pyops import reference as _ref
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.pointrend._ops import SUBDIVISION_STEP, UNCERTAIN_POINT_COORDS
from pyops.pointrend.sampling import point_sample

# detectron2's helpers, as the reference implements them (plain tensor code)
calculate_uncertainty = budget(forward=4)(_ref.calculate_uncertainty)
calculate_uncertainty_sem_seg = budget(forward=2)(_ref.calculate_uncertainty_sem_seg)
generate_regular_grid_point_coords = budget(forward=4)(_ref.generate_regular_grid_point_coords)
get_uncertain_point_coords_on_grid = budget(forward=10)(_ref.get_uncertain_point_coords_on_grid)


def _fused_channel(uncertainty_func, classes):
    """(True, classes) when ``uncertainty_func`` is -|logit| of one channel per row, which the fused
    kernels compute; (False, None) for any other function (the generic path)."""
    f = uncertainty_func
    if f is None or f is calculate_uncertainty:
        return True, classes
    if isinstance(f, functools.partial) and f.func is calculate_uncertainty and not f.args and set(f.keywords) <= {"classes"}:
        return True, f.keywords.get("classes", classes)
    return False, None


def _check_logits(fn: str, name: str, logits, dims: int = 4) -> None:
    _checks.tensor(fn, name, logits, dims=dims, shape="(R, C, H, W)" if dims == 4 else "(R, h, w)")
    if logits.shape[-1] == 0 or logits.shape[-2] == 0:
        _checks.fail(fn, f"{name} must have non-empty spatial dimensions, got shape {tuple(logits.shape)}")


def _random_seed(device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """A Philox seed drawn from the torch generator (no host synchronisation on CUDA)."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device, generator=generator)


@budget(forward=7, note="device-side check of classes (5 ops, no sync), seed draw, one fused kernel")
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
    fn = "get_uncertain_point_coords_with_randomness"
    _check_logits(fn, "coarse_logits", coarse_logits)
    _checks.integer(fn, "num_points", num_points, min=1)
    _checks.number(fn, "oversample_ratio", oversample_ratio, min=1)
    _checks.number(fn, "importance_sample_ratio", importance_sample_ratio, min=0, max=1)
    R, C = coarse_logits.shape[:2]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    _checks.tensor(fn, "candidates", candidates, dims=3, shape=f"({R}, {num_sampled}, 2)", dtypes=(torch.float32,), optional=True)
    if candidates is not None and candidates.shape != (R, num_sampled, 2):
        _checks.fail(fn, f"candidates must have shape ({R}, {num_sampled}, 2), got {tuple(candidates.shape)}")
    _checks.same_device(fn, coarse_logits=coarse_logits, candidates=candidates)
    fused, classes = _fused_channel(uncertainty_func, classes)
    name = _backend.resolve("uncertain_point_coords", backend, coarse_logits.device)
    if not fused or name == "reference":
        func = uncertainty_func if uncertainty_func is not None else functools.partial(calculate_uncertainty, classes=classes)
        return _ref.get_uncertain_point_coords_with_randomness(
            coarse_logits, func, num_points, oversample_ratio, importance_sample_ratio, candidates, generator
        )
    if C > 1:
        if classes is None:
            _checks.fail(fn, f"coarse_logits has {C} channels: pass classes= (the channel of each row)")
        classes = torch.as_tensor(classes, device=coarse_logits.device).long()
        if classes.shape != (R,):
            _checks.fail(fn, f"classes must have shape ({R},), got {tuple(classes.shape)}")
        # Checked on the device, without a host sync: raises at once on the CPU, and as a device-side
        # assert (before the kernel runs) on CUDA, as out-of-range indices do in PyTorch.
        torch._assert_async(((classes >= 0) & (classes < C)).all(), f"pyops.{fn}: classes must lie in [0, {C})")
    else:
        classes = None
    seed = _random_seed(coarse_logits.device, generator)
    return UNCERTAIN_POINT_COORDS.kernel(name)(coarse_logits, classes, candidates, seed, num_points, num_sampled, num_uncertain)


# ---- subdivision inference --------------------------------------------------------------------


@budget(forward=1)
@accepts_arrays
def subdivision_step(logits: torch.Tensor, num_points: int, *, backend: str | None = None):
    """One fused subdivision step on one channel per row: 2x bilinear upsample
    (``align_corners=False``) of (R, h, w) logits, uncertainty ``-|logit|``, selection of the
    ``P = min(num_points, 4hw)`` most uncertain cells. Returns (upsampled (R, 2h, 2w),
    flat indices (R, P) int64, cell-centre coords (R, P, 2) float32); order within a row is
    unspecified."""
    _check_logits("subdivision_step", "logits", logits, dims=3)
    _checks.integer("subdivision_step", "num_points", num_points, min=1)
    name = _backend.resolve("subdivision_step", backend, logits.device)
    if name == "reference":
        return _ref.subdivision_step(logits, num_points)
    return SUBDIVISION_STEP.kernel(name)(logits, num_points)


def _select_channel(logits: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """(R, C, ...) -> (R, ...): channel classes[r] of row r (the only channel when C == 1)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    fn = "subdivision_inference"
    R, C = logits.shape[:2]
    if classes is None:
        _checks.fail(fn, f"coarse_logits has {C} channels: pass classes= (the channel of each row)")
    if not isinstance(classes, torch.Tensor) or classes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        _checks.fail(fn, f"classes must be an integer tensor of shape ({R},), got {_checks.describe(classes)}", TypeError)
    if tuple(classes.shape) != (R,):
        _checks.fail(fn, f"classes must have shape ({R},), got {tuple(classes.shape)}")
    _checks.same_device(fn, coarse_logits=logits, classes=classes)
    eager_cpu = classes.device.type == "cpu" and not torch.compiler.is_compiling() and not isinstance(
        classes, torch._subclasses.fake_tensor.FakeTensor)  # checked where it costs no host sync
    if R and eager_cpu and (classes.min() < 0 or classes.max() >= C):
        _checks.fail(fn, f"classes must lie in [0, {C}), got values from {int(classes.min())} to {int(classes.max())}")
    return logits[torch.arange(R, device=logits.device), classes.long()]


@budget(forward=8, note="two steps: per step the fused step kernel, the point head, one scatter (+1 cast)")
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
    fn = "subdivision_inference"
    _check_logits(fn, "coarse_logits", coarse_logits)
    if not callable(point_head):
        _checks.fail(fn, f"point_head must be a callable (coords, indices) -> logits, got {_checks.describe(point_head)}", TypeError)
    _checks.integer(fn, "num_steps", num_steps, min=0)
    _checks.integer(fn, "num_points", num_points, min=1)
    logits = _select_channel(coarse_logits, classes)
    for step in range(num_steps):
        h, w = logits.shape[1:]
        if num_points >= 16 * h * w and step < num_steps - 1:
            logits = F.interpolate(logits.unsqueeze(1), scale_factor=2, mode="bilinear", align_corners=False).squeeze(1)
            continue
        up, indices, coords = subdivision_step(logits, num_points, backend=backend)
        point_logits = point_head(coords, indices)
        R, P = indices.shape
        ok = isinstance(point_logits, torch.Tensor) and (
            tuple(point_logits.shape) == (R, P)
            or (point_logits.dim() == 3 and point_logits.shape[0] == R and point_logits.shape[2] == P
                and point_logits.shape[1] in (1, coarse_logits.shape[1])))
        if not ok:
            got = tuple(point_logits.shape) if isinstance(point_logits, torch.Tensor) else _checks.describe(point_logits)
            _checks.fail(fn, f"point_head returned {got}; expected logits of shape (R, P) = ({R}, {P}) or "
                             f"(R, C', P) with C' = 1 or {coarse_logits.shape[1]}")
        if point_logits.dim() == 3:
            point_logits = _select_channel(point_logits, classes)
        logits = up.flatten(1).scatter(1, indices, point_logits.to(up.dtype)).view_as(up)
    return logits.unsqueeze(1)



# ---- Mask2Former ------------------------------------------------------------------------------


@budget(forward=4, backward=1, note="seed, selection kernel, then the labels and logits at the points")
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
    fn = "sample_points_for_loss"
    _checks.integer(fn, "num_points", num_points, min=1)
    _checks.number(fn, "oversample_ratio", oversample_ratio, min=1)
    _checks.number(fn, "importance_sample_ratio", importance_sample_ratio, min=0, max=1)
    _checks.tensor(fn, "mask_logits", mask_logits, dims=(3, 4), shape="(R, 1, h, w) or (R, h, w)")
    if mask_logits.dim() == 3:
        mask_logits = mask_logits.unsqueeze(1)
    _check_logits(fn, "mask_logits", mask_logits)
    if mask_logits.shape[1] != 1:
        _checks.fail(fn, f"mask_logits must have one channel, (R, 1, h, w) or (R, h, w), got shape {tuple(mask_logits.shape)}")
    _checks.tensor(fn, "gt_masks", gt_masks, dims=3, shape="(R, H, W)", dtypes=(torch.bool, torch.uint8, *_checks.FLOATS))
    if gt_masks.dim() != 3 or gt_masks.shape[0] != mask_logits.shape[0]:
        raise ValueError(
            f"pyops.sample_points_for_loss: gt_masks must be (R, H, W) with R = {mask_logits.shape[0]}, "
            f"got {tuple(gt_masks.shape)}"
        )
    if gt_masks.shape[1] == 0 or gt_masks.shape[2] == 0:
        _checks.fail(fn, f"gt_masks must have non-empty spatial dimensions, got shape {tuple(gt_masks.shape)}")
    _checks.same_device(fn, mask_logits=mask_logits, gt_masks=gt_masks)
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            mask_logits.detach(), None, num_points, oversample_ratio, importance_sample_ratio,
            generator=generator, backend=backend,
        )
        labels = point_sample(gt_masks.unsqueeze(1), coords, backend=backend).squeeze(1)
    logits = point_sample(mask_logits, coords, backend=backend).squeeze(1)
    return coords, logits, labels.float()
