"""Loading of the compiled extension ``pyops._C`` (the C++ CPU and CUDA kernels).

``import pyops`` never fails because the extension is missing, stale or broken: the Triton and
reference backends keep working, and the C++ backends (``"cpu"``, ``"cuda"``) raise
:class:`ExtensionUnavailableError` carrying the reason and how to rebuild.

``PYOPS_EXTENSION=0`` in the environment skips loading it, as on a machine where it was never
built (the tests use this to prove the Triton kernels work without it).
"""

from __future__ import annotations

import os
import warnings

import torch

from pyops._schemas import SCHEMAS

REBUILD_HINT = (
    "rebuild it from the source checkout with "
    "`pip install --no-build-isolation -e .` (add FORCE_CUDA=1 to compile the CUDA kernels)"
)


class ExtensionUnavailableError(RuntimeError):
    """A backend that needs the compiled extension was asked for, but it did not load."""


def _stale_schemas() -> list[str]:
    """Ops whose compiled schema differs from pyops/_schemas.py (the extension is out of date)."""
    stale = []
    for name, schema in SCHEMAS.items():
        packet = getattr(torch.ops.pyops, name, None)
        compiled = str(packet.default._schema) if packet is not None else None
        if compiled != str(torch._C.parse_schema(f"pyops::{name}{schema}")):
            stale.append(name)
    return stale


def _load():
    if os.environ.get("PYOPS_EXTENSION", "1") == "0":
        return None, ImportError("not loaded: PYOPS_EXTENSION=0 is set")
    try:
        from pyops import _C  # loading it defines the torch.ops.pyops operators
    except ImportError as exc:  # missing, built against another torch, unresolved symbol, ...
        return None, exc
    stale = _stale_schemas()
    if stale:
        return None, ImportError(f"pyops._C is out of date: its schemas of {', '.join(stale)} differ from pyops/_schemas.py")
    return _C, None


_C, load_error = _load()
if load_error is not None and os.environ.get("PYOPS_EXTENSION", "1") != "0":
    warnings.warn(
        f"pyops: the compiled extension pyops._C did not load ({load_error}); backends 'triton' and "
        f"'reference' still work. To fix it, {REBUILD_HINT}.",
        RuntimeWarning,
        stacklevel=2,
    )


def available() -> bool:
    return _C is not None


def with_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    return _C is not None and bool(_C.WITH_CUDA)


def with_openmp() -> bool:
    return _C is not None and bool(_C.WITH_OPENMP)


def require(backend: str) -> None:
    """Raise a clear error if C++ ``backend`` (``"cpu"`` or ``"cuda"``) cannot run here."""
    if _C is None:
        raise ExtensionUnavailableError(
            f"pyops backend {backend!r} needs the compiled extension pyops._C, which did not "
            f"load: {load_error}. Use backend='triton' or 'reference', or {REBUILD_HINT}."
        )
    if backend == "cuda" and not _C.WITH_CUDA:
        raise ExtensionUnavailableError(
            "pyops backend 'cuda' needs the CUDA kernels, but pyops._C was built without them "
            "(no CUDA toolkit at build time). Use backend='triton', or rebuild with "
            "`FORCE_CUDA=1 pip install --no-build-isolation -e .`."
        )
