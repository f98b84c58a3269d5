"""Switchable atrous convolution (DetectoRS): :class:`SAConv2d` and the functional
:func:`sac_conv2d`, with the semantics of :mod:`pyops.reference.sac` (``shared/specs/sac.md``).

Backends: ``"cpu"`` (C++), ``"cuda"`` (CUDA C++), ``"triton"``, ``"reference"``. Each of the
first three runs the forward by one of two algorithms (``algorithm=``):

``"composition"``  two library convolutions (cuDNN on GPU) plus fused kernels for everything
                   else: AWS, the two contexts, the switch pre-pass and pooling, the blend
``"igemm"``        one dual-accumulator implicit-GEMM kernel for both convolutions and the blend:
                   one output tile, two accumulators (dilation d and 3d taps), the epilogue writes
                   the blend (CUDA: WMMA tensor cores for float16/bfloat16; Triton: ``tl.dot``;
                   CPU: a direct convolution)

Both share the switch pre-pass, AWS, the post-context and the backward (the composition's:
library convolution backward plus fused kernels). The C++/CUDA steps are in
``csrc/sac/sac_host.h``, the Triton ones mirror them step for step. At the spec's shapes the
layer is launch-bound, so the steps are few: about a dozen calls forward, two dozen backward.
:func:`default_algorithm` is the one place that picks the default.

Files: ``conv.py`` holds :func:`sac_conv2d` (argument checks, dispatch budget, algorithm
choice), ``layer.py`` the module :class:`SAConv2d`; ``_ops.py`` the operators' registrations
(Triton kernels, fake kernels, autograd); ``_triton.py`` the Triton host glue; ``_selfcheck.py``
:func:`random_parameters` and the ``python -m pyops`` check.
"""

from pyops.sac import _selfcheck  # noqa: F401  (registers the python -m pyops checks)
from pyops.sac._selfcheck import random_parameters
from pyops.sac.conv import ALGORITHMS, DEFAULT_ALGORITHMS, default_algorithm, sac_conv2d
from pyops.sac.deform import deform_conv2d
from pyops.sac.layer import SAConv2d

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "default_algorithm",
    "deform_conv2d",
    "random_parameters",
    "sac_conv2d",
    "SAConv2d",
]
