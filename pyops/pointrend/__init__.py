"""PointRend ops: point sampling, uncertainty-guided point selection, subdivision inference,
ROI helpers and Mask2Former's loss-point sampler.

Drop-in for detectron2's ``point_features.py`` / ``point_head`` helpers, mmcv's ``point_sample``
and Mask2Former's sampling lines; the semantics are those of :mod:`pyops.reference.pointrend`.

Files: ``sampling.py`` and ``selection.py`` hold the public functions (with their argument checks
and dispatch budgets); ``_ops.py`` the operators' registrations (Triton kernels, fake kernels,
autograd); ``_triton.py`` the Triton host glue; ``_selfcheck.py`` the ``python -m pyops`` checks.
"""

from pyops.pointrend import _selfcheck  # noqa: F401  (registers the python -m pyops checks)
from pyops.pointrend.sampling import get_point_coords_wrt_image, point_sample, point_sample_fine_grained_features
from pyops.pointrend.selection import (
    calculate_uncertainty,
    calculate_uncertainty_sem_seg,
    generate_regular_grid_point_coords,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    sample_points_for_loss,
    subdivision_inference,
    subdivision_step,
)

__all__ = [
    "calculate_uncertainty",
    "calculate_uncertainty_sem_seg",
    "generate_regular_grid_point_coords",
    "get_point_coords_wrt_image",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "point_sample",
    "point_sample_fine_grained_features",
    "sample_points_for_loss",
    "subdivision_inference",
    "subdivision_step",
]
