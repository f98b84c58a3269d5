"""Array interop: pyops' functional ops accept any DLPack-capable array (NumPy, CuPy, JAX, ...)
where they take tensors, and return the caller's array type.

Arrays cross zero-copy in both directions through ``__dlpack__`` / ``from_dlpack``; for CUDA
arrays the DLPack stream protocol orders the work after the caller's stream. The ops never write
to their inputs.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import torch


def _is_foreign_array(x: Any) -> bool:
    return not isinstance(x, torch.Tensor) and hasattr(x, "__dlpack__")


def _to_torch(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_to_torch(v) for v in x)
    if not _is_foreign_array(x):
        return x
    try:
        return torch.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"pyops: cannot take this {type(x).__module__}.{type(x).__name__} zero-copy through DLPack "
            f"({exc}); pass a strided array with non-negative strides, e.g. a contiguous copy"
        ) from exc


def _from_dlpack_of(kind: type) -> Callable[[torch.Tensor], Any]:
    """The ``from_dlpack`` of the library that made arrays of type ``kind``."""
    root = kind.__module__.split(".")[0]
    module = importlib.import_module("jax.numpy" if root in ("jax", "jaxlib") else root)
    from_dlpack = getattr(module, "from_dlpack", None)
    if from_dlpack is None:
        raise TypeError(f"pyops: {root} has no from_dlpack to return results as {kind.__name__}")
    return from_dlpack


def _to_caller(out: Any, from_dlpack: Callable) -> Any:
    if isinstance(out, (list, tuple)):
        return type(out)(_to_caller(v, from_dlpack) for v in out)
    return from_dlpack(out.detach()) if isinstance(out, torch.Tensor) else out


def accepts_arrays(fn: Callable) -> Callable:
    """Decorator: ``fn`` also takes DLPack-capable arrays (also inside list/tuple arguments) and
    then returns results of the first such argument's type. Torch tensors pass through untouched."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = [*args, *kwargs.values()]
        values += [v for x in values if isinstance(x, (list, tuple)) for v in x]
        kind = next((type(x) for x in values if _is_foreign_array(x)), None)
        if kind is None:
            return fn(*args, **kwargs)
        out = fn(*_to_torch(args), **{k: _to_torch(v) for k, v in kwargs.items()})
        return _to_caller(out, _from_dlpack_of(kind))

    return wrapper
