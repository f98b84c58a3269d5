"""Point sampling: :func:`point_sample` and the ROI helpers built on it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyops import _backend, _checks
from pyops import reference as _ref
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.pointrend._ops import POINT_SAMPLE

_MASKS = (torch.bool, torch.uint8)  # sampled to float32 (forward only), e.g. ground-truth masks

get_point_coords_wrt_image = budget(forward=7)(_ref.get_point_coords_wrt_image)


def _check_point_sample(fn: str, input, coords, align_corners) -> None:
    _checks.tensor(fn, "input", input, dims=4, shape="(N, C, H, W)", dtypes=_checks.FLOATS + _MASKS)
    _checks.tensor(fn, "coords", coords, dims=(3, 4), shape="(N, P, 2) or (N, Hg, Wg, 2)")
    _checks.boolean(fn, "align_corners", align_corners)
    if coords.shape[-1] != 2:
        _checks.fail(fn, f"coords must have shape (N, P, 2) or (N, Hg, Wg, 2), got {tuple(coords.shape)}")
    if coords.shape[0] != input.shape[0]:
        _checks.fail(fn, f"coords has batch size {coords.shape[0]} but input has {input.shape[0]}")
    _checks.same_device(fn, input=input, coords=coords)
    if input.shape[2] == 0 or input.shape[3] == 0:
        _checks.fail(fn, f"input must have non-empty spatial dimensions (H, W), got shape {tuple(input.shape)}")


def _coords_argument(coords, point_coords, points):
    given = {n: v for n, v in (("coords", coords), ("point_coords", point_coords), ("points", points)) if v is not None}
    if len(given) != 1:
        _checks.fail("point_sample", f"pass the points once, as coords (or point_coords= / points=), got {sorted(given) or 'none'}", TypeError)
    return next(iter(given.values()))


def _grid_sample_options(kwargs: dict) -> tuple[str, str]:
    unknown = set(kwargs) - {"mode", "padding_mode"}
    if unknown:
        _checks.fail("point_sample", f"unexpected keyword argument(s) {sorted(unknown)}; F.grid_sample options taken: mode, padding_mode", TypeError)
    mode, padding_mode = kwargs.get("mode", "bilinear"), kwargs.get("padding_mode", "zeros")
    if mode not in ("bilinear", "nearest", "bicubic"):
        _checks.fail("point_sample", f"mode must be 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        _checks.fail("point_sample", f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    return mode, padding_mode


@budget(forward=1, backward=2, note="one kernel forward; input and coords gradients one kernel each")
@accepts_arrays
def point_sample(
    input: torch.Tensor,
    coords: torch.Tensor | None = None,
    align_corners: bool = False,
    *,
    backend: str | None = None,
    point_coords: torch.Tensor | None = None,
    points: torch.Tensor | None = None,
    **grid_sample_kwargs,
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
        point_coords, points: other names of ``coords`` (detectron2's and mmcv's), so their calls
            work unchanged; pass exactly one of the three.
        **grid_sample_kwargs: ``mode`` and ``padding_mode``, forwarded to ``F.grid_sample`` as
            detectron2 and mmcv do. The kernels implement the defaults (``"bilinear"``,
            ``"zeros"``); any other value runs ``F.grid_sample`` itself (the reference).

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
    coords = _coords_argument(coords, point_coords, points)
    _check_point_sample("point_sample", input, coords, align_corners)
    mode, padding_mode = _grid_sample_options(grid_sample_kwargs)
    if (mode, padding_mode) != ("bilinear", "zeros"):
        return _ref.point_sample(input, coords, align_corners, mode, padding_mode)
    if coords.dim() == 4:
        out = sample_rows(input, coords.reshape(coords.shape[0], -1, 2), align_corners, None, backend)
        return out.view(*out.shape[:2], *coords.shape[1:3])
    return sample_rows(input, coords, align_corners, None, backend)


def sample_rows(input, coords, align_corners, batch_index, backend, fn: str = "point_sample"):
    """point_sample of checked (N, P, 2) coords, row n sampling image ``batch_index[n]`` (or n)."""
    name = _backend.resolve(fn, backend, input.device)
    if name == "reference":
        return _ref.point_sample(input if batch_index is None else input[batch_index], coords, align_corners)
    return POINT_SAMPLE.kernel(name)(input, coords, align_corners, batch_index)


@budget(forward=20, backward=4, note="two levels, two images: 7 for the image coordinates, 1 + B for the row images, 4 per level, 1 cat")
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
    fn = "point_sample_fine_grained_features"
    boxes = [b.tensor if hasattr(b, "tensor") else b for b in boxes]
    if not features_list or len(features_list) != len(feature_scales):
        _checks.fail(fn, f"need one scale per feature level, got {len(features_list)} levels and {len(feature_scales)} scales")
    _checks.tensor(fn, "point_coords", point_coords, dims=3, shape="(R, P, 2)")
    for i, b in enumerate(boxes):
        _checks.tensor(fn, f"boxes[{i}]", b, dims=2, shape="(R_i, 4)")
    if sum(len(b) for b in boxes) != point_coords.shape[0]:
        _checks.fail(fn, f"point_coords has {point_coords.shape[0]} rows but boxes hold {sum(len(b) for b in boxes)} ROIs")
    for i, feature_map in enumerate(features_list):
        _checks.tensor(fn, f"features_list[{i}]", feature_map, dims=4, shape="(B, C, H, W)")
        if feature_map.shape[0] != len(boxes):
            _checks.fail(fn, f"features_list[{i}] must be (B, C, H, W) with B = {len(boxes)} images, got {tuple(feature_map.shape)}")
    image_coords = get_point_coords_wrt_image(torch.cat(boxes), point_coords)
    # row r samples the image its box belongs to; built on the device (no host-to-device copy)
    device = point_coords.device
    batch_index = torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=device) for i, b in enumerate(boxes)])
    x, y = image_coords.unbind(-1)
    levels = []
    for feature_map, scale in zip(features_list, feature_scales):
        h, w = feature_map.shape[-2:]
        normalized = torch.stack((x * (scale / w), y * (scale / h)), dim=-1)
        levels.append(sample_rows(feature_map, normalized, False, batch_index, backend))
    return torch.cat(levels, dim=1), image_coords
