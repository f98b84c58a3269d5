"""Argument checks of the public ops, with messages that name the public function and argument.

Each public function checks its own arguments, once, with these helpers, before choosing a
backend; the kernels behind it (C++, CUDA, Triton) then only assert the invariants their memory
safety needs. Messages read ``pyops.point_sample: coords must have shape (N, P, 2), got (4, 7)``.
Type errors (not a tensor, wrong dtype) raise :class:`TypeError`; wrong shapes, values, devices
and sizes raise :class:`ValueError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fail(fn: str, message: str, exc: type[Exception] = ValueError):
    """Raise ``exc`` with ``pyops.<fn>: <message>``."""
    raise exc(f"pyops.{fn}: {message}")


def describe(value) -> str:
    """How a value is shown in an error: a tensor by dtype and shape, anything else by type."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__module__}.{type(value).__name__}" if type(value).__module__ != "builtins" else type(value).__name__


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return "/".join(str(d).removeprefix("torch.") for d in dtypes)


def tensor(
    fn: str,
    name: str,
    value,
    *,
    dims: int | tuple[int, ...] | None = None,
    shape: str | None = None,
    dtypes: Iterable[torch.dtype] | None = FLOATS,
    optional: bool = False,
) -> None:
    """``value`` is a tensor with ``dims`` dimensions (one of them) and a dtype in ``dtypes``.

    ``shape`` is how the expected shape is written in the message, e.g. ``"(N, P, 2)"``."""
    if value is None and optional:
        return
    expected = f"a {shape} tensor" if shape else "a tensor"
    if not isinstance(value, torch.Tensor):
        fail(fn, f"{name} must be {expected}, got {describe(value)}", TypeError)
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else dims
        if value.dim() not in allowed:
            fail(fn, f"{name} must be {expected}, got shape {tuple(value.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if value.dtype not in dtypes:
            fail(fn, f"{name} must have dtype {_dtype_names(dtypes)}, got {value.dtype}", TypeError)


def same_device(fn: str, **named) -> None:
    """Every tensor given (``None`` skipped) is on the device of the first one."""
    tensors = [(n, t) for n, t in named.items() if isinstance(t, torch.Tensor)]
    if not tensors:
        return
    first, device = tensors[0][0], tensors[0][1].device
    for name, t in tensors[1:]:
        if t.device != device:
            fail(fn, f"{name} is on {t.device} but {first} is on {device}; move them to one device")


def integer(fn: str, name: str, value, *, min: int | None = None) -> int:
    """``value`` is an int (not a bool) of at least ``min``; returns it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(fn, f"{name} must be an int, got {describe(value)}", TypeError)
    if min is not None and value < min:
        fail(fn, f"{name} must be >= {min}, got {value}")
    return int(value)


def number(
    fn: str, name: str, value, *, min: float | None = None, max: float | None = None, finite: bool = True
) -> float:
    """``value`` is a real number (not a bool, not NaN) in ``[min, max]``; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(fn, f"{name} must be a number, got {describe(value)}", TypeError)
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        fail(fn, f"{name} must be a finite number, got {value}")
    if (min is not None and value < min) or (max is not None and value > max):
        lo = "-inf" if min is None else f"{min:g}"
        hi = "inf" if max is None else f"{max:g}"
        fail(fn, f"{name} must be in [{lo}, {hi}], got {value:g}")
    return value


def boolean(fn: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        fail(fn, f"{name} must be a bool, got {describe(value)}", TypeError)
    return value
