"""StyleGAN2-ADA augmentation (Karras et al., "Training Generative Adversarial Networks with
Limited Data", NeurIPS 2020): the augmentation pipeline, its functional form with explicit
per-sample parameters, and the adaptive controller of the augmentation strength ``p``.

Contract: ``shared/specs/ada.md``; the readable chain is :mod:`pyops.reference.ada`.

* :func:`augment` / :func:`geometric_color` take explicit per-sample parameters
  (``G_inv`` (B, 3, 3), ``C`` (B, 4, 4), filter gains (B, 4), noise sigma (B,) with a noise
  field, cutout boxes (B, 4)) and are deterministic.
* :class:`AugmentPipe` draws those parameters from the torch generator (``torch.manual_seed``
  reproduces a call) with per-augmentation probabilities ``multiplier * p``.
* :class:`AdaController` adjusts ``p`` from the sign of the discriminator's outputs on reals
  (the r_t heuristic); :func:`rv_heuristic` is the validation-set heuristic r_v.

The geometric + colour stage runs as one fused op (``torch.ops.pyops.ada_geom_color``: C++ on
CPU, CUDA C++ on GPU) whose backward is the adjoint, itself an op whose backward is the forward
again, so gradients of any order reach the images (R1 through the pipeline works). Filtering,
noise and cutout are a second fused op (``torch.ops.pyops.ada_filter_noise_cutout``), built the
same way.

Files: ``functional.py`` holds the functions (with their dispatch budgets), ``matrices.py`` the
matrix constructors, ``pipeline.py`` :class:`AugmentPipe`, ``controller.py`` :class:`AdaController`
and :func:`rv_heuristic`; ``_checks.py`` the argument checks; ``_ops.py`` the operators'
registrations (Triton kernels, fake kernels, autograd); ``_triton.py`` the Triton host glue;
``_selfcheck.py`` the ``python -m pyops`` check.
"""

from pyops.ada import _selfcheck  # noqa: F401  (registers the python -m pyops checks)
from pyops.ada.controller import AdaController, rv_heuristic
from pyops.ada.functional import augment, filter_noise_cutout, geometric_color
from pyops.ada.matrices import rotate2d, rotate3d, scale2d, scale3d, translate2d, translate3d
from pyops.ada.pipeline import MULTIPLIERS, PRESETS, STRENGTHS, AugmentPipe

__all__ = [
    "AdaController",
    "augment",
    "AugmentPipe",
    "filter_noise_cutout",
    "geometric_color",
    "MULTIPLIERS",
    "PRESETS",
    "rotate2d",
    "rotate3d",
    "rv_heuristic",
    "scale2d",
    "scale3d",
    "STRENGTHS",
    "translate2d",
    "translate3d",
]
