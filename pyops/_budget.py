"""Dispatch budgets of the public ops: how many operator calls one call may make, and no host sync.

A GPU hot path is a small, fixed number of kernel launches and never waits on the host. Each
public function and module states its budget beside its definition with :func:`budget`; the
tests (``tests/test_budgets.py``) run every public op on fake CUDA tensors under a
:class:`DispatchRecorder` and fail when a call dispatches more operators than its budget or
synchronises with the host (``.item()``, ``.tolist()``, ``.cpu()`` of device data, ``nonzero``
without a size, a blocking copy of host data to the device such as ``torch.tensor(list,
device="cuda")``, ...). What is counted: every operator call that reaches the dispatcher from
Python (a pyops op counts as one, whatever it launches inside; pure views are not counted). On a
GPU the same tests also run under ``torch.cuda.set_sync_debug_mode("error")`` and capture the
call in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyops._registry import TRITON_IMPLS, TRITON_NAMESPACE

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Budget:
    """Most operator calls of one forward call (and of its backward, when it has one)."""

    forward: int
    backward: int | None = None
    note: str = ""


def budget(forward: int, backward: int | None = None, note: str = "") -> Callable[[F], F]:
    """Declare the dispatch budget of a public function (or of a module's ``forward``)."""

    def mark(fn: F) -> F:
        fn.__pyops_budget__ = Budget(forward, backward, note)
        return fn

    return mark


def budget_of(fn) -> Budget | None:
    """The declared budget of a public function or module class (its ``forward``)."""
    if isinstance(fn, type):
        fn = getattr(fn, "forward", None)
    return getattr(fn, "__pyops_budget__", None)


# Operators that make the host wait for the device when their input is on a GPU.
SYNC_OPS = frozenset({"aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.equal", "aten.is_nonzero"})


class HostSync(RuntimeError):
    """An operator call that synchronises with the host, where none is allowed."""


@dataclass
class Call:
    name: str
    devices: tuple[str, ...]


@dataclass
class DispatchRecorder(TorchDispatchMode):
    """Records the operator calls made under it (views left out) and flags host synchronisations.

    ``raise_on_sync``: raise :class:`HostSync` at the first synchronising call on device data
    (the traceback then points at the line that made it). ``inline_triton``: run ``pyops_triton``
    operators as their Python implementations under the recorder, so the calls (and syncs) of the
    Triton host glue are recorded too."""

    raise_on_sync: bool = False
    inline_triton: bool = False
    calls: list[Call] = field(default_factory=list)
    syncs: list[str] = field(default_factory=list)

    def __post_init__(self):
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        devices = tuple(sorted({t.device.type for t in _tensors(args, kwargs)}))
        if _syncs(func, name, args, kwargs, devices):
            self.syncs.append(name)
            if self.raise_on_sync:
                raise HostSync(f"{name} synchronises with the host (inputs on {', '.join(devices)})")
        if not getattr(func, "is_view", False) and not name.startswith("prim."):  # prim.*: metadata
            self.calls.append(Call(name, devices))
        if self.inline_triton and name.startswith(f"{TRITON_NAMESPACE}."):
            with self:
                return TRITON_IMPLS[name.split(".", 1)[1]](*args, **kwargs)
        return func(*args, **kwargs)

    @property
    def count(self) -> int:
        return len(self.calls)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]


def _tensors(args, kwargs):
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _syncs(func, name: str, args, kwargs, devices: tuple[str, ...]) -> bool:
    on_device = any(d not in ("cpu", "meta") for d in devices)
    if name in SYNC_OPS:
        return on_device  # item() of a CPU scalar and nonzero_static do not wait
    if name == "aten.copy_" and len(args) >= 2:
        return _crosses(args[1].device, args[0].device) and not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    if name == "aten._to_copy" and kwargs.get("device") is not None and args:
        return _crosses(args[0].device, torch.device(kwargs["device"])) and not kwargs.get("non_blocking", False)
    return False


def _crosses(src: torch.device, dst: torch.device) -> bool:
    """A blocking copy between host and device memory (either way) waits for the device."""
    host = ("cpu", "meta")
    return (src.type in host) != (dst.type in host)
