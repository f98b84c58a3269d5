"""pyops: fused CPU, CUDA and Triton kernels for the hot spots of Linformer, PointRend,
DetectoRS (switchable atrous convolution) and StyleGAN2-ADA.

Every op takes ``backend=`` (``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"``; ``None``
chooses by device); :func:`set_backend` and :func:`use_backend` choose for every call.
``python -m pyops`` prints the build and checks every op against its reference.
"""

import torch  # noqa: F401  (libtorch must be loaded before the extension)

from pyops import _extension
from pyops._backend import BACKENDS, get_backend, set_backend, use_backend
from pyops._extension import ExtensionUnavailableError
from pyops.pointrend import point_sample
from pyops import ada
from pyops.ada import AdaController, AugmentPipe, rv_heuristic

__version__ = "0.1.0"

extension_error = _extension.load_error
"""Why ``pyops._C`` did not load (an ImportError), or ``None`` if it loaded."""

__all__ = [
    "AdaController",
    "AugmentPipe",
    "BACKENDS",
    "ExtensionUnavailableError",
    "extension_error",
    "get_backend",
    "ada",
    "point_sample",
    "rv_heuristic",
    "set_backend",
    "use_backend",
]
