"""PointRend reference implementations (detectron2 ``point_features.py`` semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(
    input: torch.Tensor, coords: torch.Tensor, align_corners: bool = False, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Bilinear samples of ``input`` (N, C, H, W) at normalized points ``coords`` (N, P, 2) or
    (N, Hg, Wg, 2), ``(x, y)`` in ``[0, 1]``; returns (N, C, P) or (N, C, Hg, Wg).

    ``F.grid_sample`` (zero padding unless ``padding_mode`` says otherwise) on ``2 * coords - 1``,
    computed in float32 (float64 for float64 inputs) and returned in ``input.dtype`` (float32 for
    bool/uint8 masks).
    """
    opmath = torch.float64 if input.dtype == torch.float64 else torch.float32
    grid = 2.0 * coords.to(opmath) - 1.0
    if coords.dim() == 3:
        grid = grid.unsqueeze(2)
    out = F.grid_sample(
        input.to(opmath), grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
    )
    if coords.dim() == 3:
        out = out.squeeze(3)
    return out.to(input.dtype) if input.is_floating_point() else out


def calculate_uncertainty(logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """``-|logit|`` of the only channel, or of channel ``classes[r]`` of row r: (R, 1, ...).

    detectron2's PointRend ``calculate_uncertainty`` (and Mask2Former's, which has one channel).
    """
    if logits.shape[1] == 1:
        chosen = logits.clone()
    else:
        if classes is None:
            raise ValueError(f"calculate_uncertainty: logits has {logits.shape[1]} channels: pass classes")
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)
    return -chosen.abs()


def calculate_uncertainty_sem_seg(sem_seg_logits: torch.Tensor) -> torch.Tensor:
    """Semantic-segmentation uncertainty: minus the margin between the two best classes, (R, 1, ...)."""
    top2 = torch.topk(sem_seg_logits, k=2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def generate_regular_grid_point_coords(R: int, side: int, device=None) -> torch.Tensor:
    """Cell centres ``((i + 0.5) / side)`` of a side x side grid, x fastest: (R, side**2, 2)."""
    centres = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y], dim=-1).view(1, -1, 2).expand(R, -1, -1)


def grid_coords_of_indices(indices: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Cell-centre coordinates (..., 2) of flat indices into an (H, W) grid (detectron2's formula)."""
    w_step, h_step = 1.0 / W, 1.0 / H
    x = w_step / 2.0 + (indices % W).to(torch.float32) * w_step
    y = h_step / 2.0 + torch.div(indices, W, rounding_mode="floor").to(torch.float32) * h_step
    return torch.stack([x, y], dim=-1)


def get_uncertain_point_coords_on_grid(uncertainty_map: torch.Tensor, num_points: int):
    """The ``min(H * W, num_points)`` most uncertain cells of (R, 1, H, W): (indices (R, P) int64,
    cell-centre coords (R, P, 2)), most uncertain first: the order of detectron2's ``torch.topk``."""
    R, _, H, W = uncertainty_map.shape
    P = min(H * W, num_points)
    indices = torch.topk(uncertainty_map.view(R, H * W), k=P, dim=1).indices
    return indices, grid_coords_of_indices(indices, H, W)


def get_uncertain_point_coords_with_randomness(
    coarse_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio,
    candidates=None, generator=None,
):
    """detectron2's algorithm: score ``int(num_points * oversample_ratio)`` uniform candidates with
    ``uncertainty_func`` applied to the logits sampled at them, keep the
    ``int(importance_sample_ratio * num_points)`` most uncertain, append fresh uniform points."""
    R = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    if candidates is None:
        candidates = torch.rand(R, num_sampled, 2, device=device, generator=generator)
    uncertainty = uncertainty_func(point_sample(coarse_logits, candidates))[:, 0, :]
    num_uncertain = int(importance_sample_ratio * num_points)
    top = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    fresh = torch.rand(R, num_points - num_uncertain, 2, device=device, generator=generator)
    return torch.cat([chosen, fresh], dim=1)


def subdivision_step(logits: torch.Tensor, num_points: int):
    """2x bilinear upsample of (R, h, w) logits, then the most uncertain (-|logit|) cells:
    (upsampled (R, 2h, 2w), indices (R, P), coords (R, P, 2)), P = min(num_points, 4hw)."""
    up = F.interpolate(logits.unsqueeze(1), scale_factor=2, mode="bilinear", align_corners=False)
    indices, coords = get_uncertain_point_coords_on_grid(-up.abs().float(), num_points)
    return up.squeeze(1), indices, coords


def get_point_coords_wrt_image(boxes: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """ROI-relative points (R, P, 2) in boxes (R, 4) ``(x0, y0, x1, y1)`` to image coordinates."""
    x = boxes[:, None, 0] + point_coords[:, :, 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    y = boxes[:, None, 1] + point_coords[:, :, 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    return torch.stack([x, y], dim=-1)


def point_sample_fine_grained_features(features_list, feature_scales, boxes, point_coords):
    """detectron2's multi-level sampling, one image and one level at a time: returns
    ((R, sum C_l, P) features, (R, P, 2) image coordinates). ``boxes``: per-image (R_i, 4)."""
    image_coords = get_point_coords_wrt_image(torch.cat(list(boxes)), point_coords)
    per_image = torch.split(image_coords, [len(b) for b in boxes])
    features = []
    for i, coords in enumerate(per_image):
        levels = []
        for feature_map, scale in zip(features_list, feature_scales):
            h, w = feature_map.shape[-2:]
            size = torch.tensor([w, h], dtype=coords.dtype, device=coords.device) / scale
            levels.append(point_sample(feature_map[i : i + 1], (coords / size).unsqueeze(0)).squeeze(0).transpose(0, 1))
        features.append(torch.cat(levels, dim=1))
    return torch.cat(features, dim=0), image_coords


def subdivision_inference(coarse_logits, point_head, classes=None, num_steps=5, num_points=784):
    """detectron2's PointRend mask inference loop (all channels upsampled, as it does), returning
    the refined logits of the chosen channel: (R, 1, h * 2**num_steps, w * 2**num_steps).
    ``point_head(coords (R, P, 2), indices (R, P))`` returns logits (R, C', P) at the points."""
    R = coarse_logits.shape[0]
    logits = coarse_logits
    rows = torch.arange(R, device=logits.device)
    for step in range(num_steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        C, H, W = logits.shape[1:]
        if num_points >= 4 * H * W and step < num_steps - 1:
            continue
        uncertainty = calculate_uncertainty(logits, classes)
        indices, coords = get_uncertain_point_coords_on_grid(uncertainty, num_points)
        point_logits = point_head(coords, indices)
        logits = logits.reshape(R, C, H * W).scatter(2, indices.unsqueeze(1).expand(-1, C, -1), point_logits)
        logits = logits.view(R, C, H, W)
    return logits[rows, classes].unsqueeze(1) if logits.shape[1] > 1 else logits


def sample_points_for_loss(mask_logits, gt_masks, num_points=12544, oversample_ratio=3.0,
                           importance_sample_ratio=0.75, generator=None):
    """Mask2Former's ``loss_masks`` sampling: (coords (R, N, 2), point logits (R, N), point labels
    (R, N)), the ground truth converted to float and sampled bilinearly."""
    with torch.no_grad():
        coords = get_uncertain_point_coords_with_randomness(
            mask_logits, calculate_uncertainty, num_points, oversample_ratio, importance_sample_ratio,
            generator=generator,
        )
        labels = point_sample(gt_masks.unsqueeze(1).float(), coords).squeeze(1)
    return coords, point_sample(mask_logits, coords).squeeze(1), labels
