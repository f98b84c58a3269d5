"""Plain-PyTorch reference implementations: the definition every kernel is tested against."""

from pyops.reference import ada
from pyops.reference.linformer import linformer_attention, linformer_project
from pyops.reference.pointrend import (
    calculate_uncertainty,
    calculate_uncertainty_sem_seg,
    generate_regular_grid_point_coords,
    get_point_coords_wrt_image,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    point_sample_fine_grained_features,
    sample_points_for_loss,
    subdivision_inference,
    subdivision_step,
)
from pyops.reference.sac import aws_weight, deform_conv2d, sac_conv2d, sac_deform_conv2d, two_convolutions

__all__ = [
    "ada",
    "aws_weight",
    "calculate_uncertainty",
    "calculate_uncertainty_sem_seg",
    "deform_conv2d",
    "generate_regular_grid_point_coords",
    "get_point_coords_wrt_image",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "linformer_attention",
    "linformer_project",
    "point_sample",
    "point_sample_fine_grained_features",
    "sample_points_for_loss",
    "subdivision_inference",
    "sac_conv2d",
    "sac_deform_conv2d",
    "subdivision_step",
    "two_convolutions",
]
