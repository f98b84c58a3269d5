"""One operator, one schema, a kernel per backend.

Each pyops op has one schema, in :mod:`pyops._schemas`. Its kernels:

* ``"cpu"``, ``"cuda"``: the C++ kernels of ``pyops::<name>``, which the compiled extension
  defines (``csrc/ops.cpp``) and implements (``csrc/<family>/``);
* ``"triton"``: ``pyops_triton::<name>``, defined here from the same schema and implemented by a
  Python function that launches Triton kernels; it is registered for CUDA tensors and for CPU
  tensors (which only the Triton interpreter, ``TRITON_INTERPRET=1``, can run), and needs no
  extension;
* ``"reference"`` is not an op: the public wrappers call :mod:`pyops.reference` directly.

A family module makes one :class:`Op` per schema and registers on it, once, the Triton
implementation, the fake (meta) kernel and the autograd formula; the fake kernel and autograd
apply to every backend's operator::

    point_sample = Op("point_sample")
    point_sample.register_triton(_triton_point_sample)
    point_sample.register_fake(_fake_point_sample)
    point_sample.register_autograd(lambda variant: backward, setup_context=_setup)
    ...
    out = point_sample.kernel(backend)(input, coords, align_corners, None)

``register_autograd`` takes a factory ``variant -> backward`` (``variant`` is ``"cpp"`` or
``"triton"``) so that a backward formula calls the backward ops of the same backend, through
``other_op.variant(variant)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pyops import _extension
from pyops._schemas import SCHEMAS

TRITON_NAMESPACE = "pyops_triton"
_TRITON_LIB = torch.library.Library(TRITON_NAMESPACE, "FRAGMENT")
TRITON_IMPLS: dict[str, Callable] = {}
"""The Python implementation of every ``pyops_triton`` operator, by op name."""


class Op:
    """The kernels of one pyops operator (see the module docstring)."""

    def __init__(self, name: str):
        self.name = name
        self.schema = SCHEMAS[name]
        self._overloads: dict[str, torch._ops.OpOverload] = {}
        if _extension.available():
            self._overloads["cpp"] = getattr(torch.ops.pyops, name).default
        self._fake: Callable | None = None
        self._autograd: tuple[Callable[[str], Callable], Callable] | None = None

    def __repr__(self) -> str:
        return f"Op({self.name!r}, variants={sorted(self._overloads)})"

    # ---- calling ---------------------------------------------------------------------------

    def variant(self, variant: str) -> torch._ops.OpOverload:
        """The operator of ``variant`` (``"cpp"`` or ``"triton"``)."""
        try:
            return self._overloads[variant]
        except KeyError:
            if variant == "cpp":
                _extension.require("cpu")  # raises ExtensionUnavailableError with the reason
            raise RuntimeError(f"pyops: operator {self.name!r} has no {variant} kernel") from None

    def kernel(self, backend: str) -> torch._ops.OpOverload:
        """The operator that runs ``backend`` (``"cpu"``, ``"cuda"`` or ``"triton"``)."""
        if backend == "triton":
            return self.variant("triton")
        _extension.require(backend)
        return self.variant("cpp")

    # ---- registration ----------------------------------------------------------------------

    def register_triton(self, fn: Callable) -> Callable:
        """Define ``pyops_triton::<name>`` with this op's schema, implemented by ``fn``."""
        if self.name in TRITON_IMPLS:
            raise RuntimeError(f"pyops: the Triton kernel of {self.name!r} is already registered")
        qualname = f"{TRITON_NAMESPACE}::{self.name}"
        torch.library.define(qualname, self.schema, lib=_TRITON_LIB)
        torch.library.impl(qualname, ("cpu", "cuda"), fn, lib=_TRITON_LIB)
        self._overloads["triton"] = getattr(getattr(torch.ops, TRITON_NAMESPACE), self.name).default
        TRITON_IMPLS[self.name] = fn
        self._apply("triton")
        return fn

    def register_fake(self, fn: Callable) -> Callable:
        """The fake (meta) kernel of every variant: output shapes, dtypes and strides."""
        self._fake = fn
        for variant in self._overloads:
            torch.library.register_fake(self._qualname(variant), fn, lib=_library(variant))
        return fn

    def register_autograd(self, make_backward: Callable[[str], Callable], setup_context: Callable) -> None:
        """Autograd of every variant: ``make_backward(variant)`` gives the backward function."""
        self._autograd = (make_backward, setup_context)
        for variant in self._overloads:
            torch.library.register_autograd(
                self._qualname(variant), make_backward(variant), setup_context=setup_context, lib=_library(variant)
            )

    def _apply(self, variant: str) -> None:
        """Register the fake kernel and autograd given so far on a variant defined later."""
        if self._fake is not None:
            torch.library.register_fake(self._qualname(variant), self._fake, lib=_library(variant))
        if self._autograd is not None:
            make_backward, setup_context = self._autograd
            torch.library.register_autograd(
                self._qualname(variant), make_backward(variant), setup_context=setup_context, lib=_library(variant)
            )

    def _qualname(self, variant: str) -> str:
        return f"{TRITON_NAMESPACE if variant == 'triton' else 'pyops'}::{self.name}"


# Registrations on the C++ operators go to a Python-side fragment of the pyops namespace (the C++
# library defines it; Python adds fake kernels and autograd to it).
_CPP_LIB = torch.library.Library("pyops", "FRAGMENT")


def _library(variant: str) -> torch.library.Library:
    return _TRITON_LIB if variant == "triton" else _CPP_LIB
