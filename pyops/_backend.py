"""Backend selection.

Every op runs on one of four backends:

``"cpu"``        the C++ kernel (CPU tensors)
``"cuda"``       the CUDA C++ kernel (CUDA tensors)
``"triton"``     the Triton kernel (CUDA tensors; CPU tensors too under ``TRITON_INTERPRET=1``)
``"reference"``  the plain PyTorch implementation in :mod:`pyops.reference` (any device)

By default CPU tensors go to ``"cpu"`` and CUDA tensors to the GPU kernel listed for the op in
:data:`GPU_DEFAULTS` (to ``"triton"`` when the extension has no CUDA kernels, e.g. a build
without nvcc: the Triton kernels need no extension). A ``backend=`` argument picks one for a call; :func:`set_backend` and the
:func:`use_backend` context manager pick one for every call. A backend that cannot run the given
tensors raises an error; pyops never falls back silently to a slower one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from pyops import _extension

BACKENDS = ("cpu", "cuda", "triton", "reference")

# The GPU kernel CUDA tensors get when no backend is chosen. Each entry should be the faster
# of the two in benchmarks/results/; an op not listed uses "cuda".
GPU_DEFAULTS: dict[str, str] = {
    # H200 (results/h200-run1): CUDA is faster in forward (both layouts), fwd+bwd channels_last,
    # Mask2Former sampling and subdivision inference; Triton only in fwd+bwd NCHW.
    "point_sample": "cuda",
    "uncertain_point_coords": "cuda",
    "subdivision_step": "cuda",
    # Linformer: the Triton kernels use tensor cores (tl.dot); the CUDA C++ attention kernel is
    # SIMT. Not yet timed on a GPU (tests pass): revisit with benchmarks/results/.
    "linformer_attention": "triton",
    "linformer_project": "cuda",
    "sac_conv2d": "cuda",  # H200 (results/h200-run2): the CUDA composition beats Triton's at every shape
    "ada_geom_color": "cuda",  # not yet timed on a GPU (tests pass); "triton" is the other choice
    "ada_filter_noise_cutout": "cuda",  # not yet timed on a GPU
}

_global_backend: str | None = None
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _validate(name: str | None) -> None:
    if name is not None and name not in BACKENDS:
        raise ValueError(f"pyops: unknown backend {name!r}; expected one of {BACKENDS} or None")


def set_backend(name: str | None) -> None:
    """Use backend ``name`` for every op call that does not pass ``backend=``.

    ``None`` restores the automatic choice by device."""
    global _global_backend
    _validate(name)
    _global_backend = name


def get_backend() -> str | None:
    """The backend set by :func:`set_backend` / :func:`use_backend`, or ``None`` (automatic)."""
    return _global_backend


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous setting on exit."""
    global _global_backend
    _validate(name)
    previous, _global_backend = _global_backend, name
    try:
        yield
    finally:
        _global_backend = previous


def triton_interpreted() -> bool:
    """Whether Triton kernels run in the interpreter (``TRITON_INTERPRET=1``), i.e. on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve(op: str, backend: str | None, device: torch.device) -> str:
    """The backend that runs ``op`` on tensors of ``device``, or a clear error."""
    _validate(backend)
    name = backend if backend is not None else _global_backend
    if name is None:
        name = "cpu" if device.type == "cpu" else GPU_DEFAULTS.get(op, "cuda")
        if name == "cuda" and _HAS_TRITON and not _extension.with_cuda():
            name = "triton"
    if name == "reference":
        return name
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"pyops.{op}: backend 'cpu' needs CPU tensors, got tensors on {device}")
    if name == "cuda" and device.type != "cuda":
        raise ValueError(f"pyops.{op}: backend 'cuda' needs CUDA tensors, got tensors on {device}")
    if name == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        raise ValueError(
            f"pyops.{op}: backend 'triton' needs CUDA tensors (or CPU tensors with "
            f"TRITON_INTERPRET=1 set before triton is imported), got tensors on {device}"
        )
    if name == "triton" and not _HAS_TRITON:
        raise _extension.ExtensionUnavailableError(
            f"pyops.{op}: backend 'triton' needs the triton package (pip install triton)"
        )
    if name != "triton":
        _extension.require(name)
    return name
