"""pyops: fused CPU, CUDA and Triton kernels for the hot spots of Linformer, PointRend,
DetectoRS (switchable atrous convolution) and StyleGAN2-ADA.

Every op takes ``backend=`` (``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"``; ``None``
chooses by device); :func:`set_backend` and :func:`use_backend` choose for every call.
``python -m pyops`` prints the build and checks every op against its reference.

The functional ops also take NumPy, CuPy, JAX or any other DLPack arrays and return the caller's
array type, zero-copy (:mod:`pyops._interop`); ``torch.jit.script`` works for
:class:`LinformerSelfAttention` and :class:`SAConv2d` (:mod:`pyops._scripting`).
"""

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from pyops import _extension
from pyops._backend import BACKENDS, get_backend, set_backend, use_backend
from pyops._extension import ExtensionUnavailableError
from pyops.linformer import (
    LinformerSelfAttention,
    init_projection,
    linformer_attention,
    linformer_project,
    shared_projection,
)
from pyops.pointrend import (
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
from pyops import ada
from pyops.ada import AdaController, AugmentPipe, rv_heuristic
from pyops.sac import SAConv2d, deform_conv2d, sac_conv2d

__version__ = "0.1.0"

extension_error = _extension.load_error
"""Why ``pyops._C`` did not load (an ImportError), or ``None`` if it loaded."""

__all__ = [
    "ada",
    "AdaController",
    "AugmentPipe",
    "BACKENDS",
    "calculate_uncertainty",
    "calculate_uncertainty_sem_seg",
    "deform_conv2d",
    "extension_error",
    "ExtensionUnavailableError",
    "generate_regular_grid_point_coords",
    "get_backend",
    "get_point_coords_wrt_image",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "init_projection",
    "linformer_attention",
    "linformer_project",
    "LinformerSelfAttention",
    "point_sample",
    "point_sample_fine_grained_features",
    "rv_heuristic",
    "sac_conv2d",
    "SAConv2d",
    "sample_points_for_loss",
    "set_backend",
    "shared_projection",
    "subdivision_inference",
    "subdivision_step",
    "use_backend",
]
