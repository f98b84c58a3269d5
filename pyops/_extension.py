"""Loading of the compiled extension ``pyops._C``.

``import pyops`` never fails because the extension is missing or broken: the reference backend
keeps working, and every other backend raises :class:`ExtensionUnavailableError` carrying the
original import error and how to rebuild.
"""

from __future__ import annotations

import warnings

REBUILD_HINT = (
    "rebuild it from the source checkout with "
    "`pip install --no-build-isolation -e .` (add FORCE_CUDA=1 to compile the CUDA kernels)"
)


class ExtensionUnavailableError(RuntimeError):
    """A backend that needs the compiled extension was asked for, but it did not load."""


try:
    from pyops import _C  # noqa: F401  (loading it registers the torch.ops.pyops operators)

    load_error: ImportError | None = None
except ImportError as exc:  # missing, built against another torch, unresolved symbol, ...
    _C = None
    load_error = exc
    warnings.warn(
        f"pyops: the compiled extension pyops._C did not load ({exc}); only backend='reference' "
        f"works. To fix it, {REBUILD_HINT}.",
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
    """Raise a clear error if ``backend`` cannot run because the extension is missing."""
    if _C is None:
        raise ExtensionUnavailableError(
            f"pyops backend {backend!r} needs the compiled extension pyops._C, which failed to "
            f"load: {load_error}. Use backend='reference', or {REBUILD_HINT}."
        )
    if backend == "cuda" and not _C.WITH_CUDA:
        raise ExtensionUnavailableError(
            "pyops backend 'cuda' needs the CUDA kernels, but pyops._C was built without them "
            "(no CUDA toolkit at build time). Rebuild with "
            "`FORCE_CUDA=1 pip install --no-build-isolation -e .`."
        )
