"""Array interop: pyops' public functional ops accept any DLPack-capable array (NumPy, CuPy, JAX,
...) where they take tensors, and return results as the caller's array type.

Rules (see the README, "Arrays from other frameworks"):

* Arrays cross zero-copy in both directions: in through ``torch.from_dlpack`` (``__dlpack__``),
  out through the caller library's ``from_dlpack``. The result type is that of the first
  non-torch array argument (lists and tuples of arrays count too). Torch tensors pass through
  untouched, so torch callers pay one scan of the arguments and nothing else.
* Read-only arrays (NumPy ``arr.flags.writeable == False``, e.g. ``np.broadcast_to`` views or
  read-only memory maps) are refused with a ``TypeError``: torch has no read-only tensors, so the
  imported tensor would alias the memory as writable. The ops never write to their inputs, but
  the refusal keeps that guarantee out of reach of later changes; pass ``arr.copy()``.
* Arrays DLPack cannot describe (negative strides, non-native byte order, object or structured
  dtypes) and array-likes without ``__dlpack__`` get a ``TypeError`` naming the argument.
* CUDA streams: ``torch.from_dlpack`` hands torch's current stream to the producer's
  ``__dlpack__(stream=...)``, which orders the producer's pending work before it; the caller's
  ``from_dlpack`` hands its stream to ``torch.Tensor.__dlpack__``, which makes that stream wait for
  torch's work. For CuPy, whose current stream is known, the whole call runs on CuPy's current
  stream (a ``torch.cuda.ExternalStream``), so inputs, kernels and results stay on the caller's
  stream with no cross-stream waits and the memory of the results is freed in stream order.
  JAX exposes no stream: the two handshakes above order the work.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import numbers
from collections.abc import Callable
from typing import Any

import torch

_ARRAY_LIKE_ATTRS = ("__array__", "__array_interface__", "__cuda_array_interface__", "__array_struct__")
_KDL_CUDA = 2  # DLDeviceType.kDLCUDA
# argument types that are never arrays (exact types: subclasses take the full check)
_PLAIN_TYPES = frozenset({torch.Tensor, torch.nn.Parameter, int, float, bool, str, type(None)})


def _is_foreign_array(x: Any) -> bool:
    return not isinstance(x, torch.Tensor) and hasattr(x, "__dlpack__")


def _is_unsupported_array(x: Any) -> bool:
    """An array-like (NumPy protocol, CUDA array interface) that cannot be imported via DLPack."""
    if x is None or isinstance(x, (torch.Tensor, bool, int, float, str, bytes, list, tuple, dict)):
        return False
    if isinstance(x, numbers.Number) or hasattr(x, "__dlpack__"):  # e.g. NumPy scalars
        return False
    return any(hasattr(x, attr) for attr in _ARRAY_LIKE_ATTRS)


def _describe(x: Any) -> str:
    return f"{type(x).__module__}.{type(x).__name__}"


def _to_torch(op: str, name: str, x: Any) -> Any:
    """``x`` as a torch tensor if it is a DLPack array (recursing into lists and tuples)."""
    if isinstance(x, (list, tuple)):
        return type(x)(_to_torch(op, f"{name}[{i}]", v) for i, v in enumerate(x))
    if _is_unsupported_array(x):
        raise TypeError(
            f"pyops.{op}: {name} is a {_describe(x)}, which does not implement the DLPack protocol "
            f"(__dlpack__); pass a torch tensor or a DLPack-capable array (NumPy >= 1.22, CuPy, JAX, ...)"
        )
    if not _is_foreign_array(x):
        return x
    flags = getattr(x, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) is False:
        raise TypeError(
            f"pyops.{op}: {name} is a read-only {_describe(x)} (flags.writeable is False); pyops imports "
            f"arrays zero-copy and torch cannot mark the alias read-only, so read-only arrays are refused. "
            f"Pass a writable copy, e.g. {name.split('[')[0]}.copy()"
        )
    fix = "pass a strided array with non-negative strides and a numeric dtype, e.g. a contiguous copy"
    strides = getattr(x, "strides", None)
    if isinstance(strides, tuple) and any(isinstance(s, int) and s < 0 for s in strides):
        # checked here: torch 2.11's from_dlpack aborts the process on negative strides
        raise TypeError(f"pyops.{op}: cannot take {name}, a {_describe(x)}, zero-copy through DLPack "
                        f"(negative strides {strides}); {fix}")
    try:
        return torch.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise TypeError(f"pyops.{op}: cannot take {name}, a {_describe(x)}, zero-copy through DLPack ({exc}); {fix}") from exc


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


def _caller_stream(first: Any):
    """A context that makes the caller's CUDA stream torch's current stream, where the caller's
    stream is known (CuPy arrays on a non-default stream); a no-op context otherwise."""
    if type(first).__module__.split(".")[0] != "cupy" or not torch.cuda.is_available():
        return contextlib.nullcontext()
    device_type, device_id = first.__dlpack_device__()
    if int(device_type) != _KDL_CUDA:
        return contextlib.nullcontext()
    import cupy

    with cupy.cuda.Device(device_id):
        ptr = cupy.cuda.get_current_stream().ptr
    if ptr in (0, 1, 2):  # the legacy / per-thread default stream: torch's default stream already
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.ExternalStream(ptr, device=torch.device("cuda", device_id)))


def _arguments(args: tuple, kwargs: dict) -> list:
    values = [*args, *kwargs.values()]
    return values + [v for x in values if isinstance(x, (list, tuple)) for v in x]


def accepts_arrays(fn: Callable) -> Callable:
    """Decorator: ``fn`` also takes DLPack-capable arrays (also inside list/tuple arguments) and
    then returns results of the first such argument's type; see the module docstring for the
    rules (zero-copy, read-only arrays refused, CUDA streams). Torch tensors pass through."""
    signature = inspect.signature(fn)
    op = f"ada.{fn.__name__}" if fn.__module__.startswith("pyops.ada.") else fn.__name__  # as in the ops' messages

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if all(type(x) in _PLAIN_TYPES for x in args) and all(type(x) in _PLAIN_TYPES for x in kwargs.values()):
            return fn(*args, **kwargs)  # the common call, checked cheaply (ops are launch-bound)
        values = _arguments(args, kwargs)
        first = next((x for x in values if _is_foreign_array(x) or _is_unsupported_array(x)), None)
        if first is None:
            return fn(*args, **kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)  # let Python report the bad call
        with _caller_stream(first):
            for name, value in bound.arguments.items():
                bound.arguments[name] = _to_torch(op, name, value)
            out = fn(*bound.args, **bound.kwargs)
            return _to_caller(out, _from_dlpack_of(type(first)))

    return wrapper
