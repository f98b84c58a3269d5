"""The shared op tester: one declaration of an op gives it the whole battery of tests.

A family test module declares an :class:`OpSpec` (the public function, its reference, how to make
random inputs, which shapes and layouts to try) and calls :func:`battery`, which returns a test
class for pytest to collect::

    POINT_SAMPLE = OpSpec(
        name="point_sample",
        run=lambda x, c, backend: pyops.point_sample(x, c, backend=backend),
        reference=reference.point_sample,
        make_inputs=lambda shape, dtype, device, gen: (...),
        shapes={"typical": (3, 7, 9, 13, 41), "size_one": (1, 1, 1, 1, 3), "empty_points": (2, 3, 4, 4, 0)},
        images=(0,),                      # inputs that may be channels_last
    )
    TestPointSample = battery(POINT_SAMPLE)

The battery, for every backend (CPU kernel, Triton under the interpreter on CPU, CUDA and Triton
on a GPU):

* ``test_matches_reference``: forward and the gradient of every floating-point input against the
  reference, for every shape and every dtype the backend supports, at per-dtype tolerances;
* ``test_layouts``: the same with channels_last images and non-contiguous inputs;
* ``test_gradcheck``: float64 finite differences (backends that compute in float64);
* ``test_opcheck``: ``torch.library.opcheck`` of every pyops operator the call issues, with the
  arguments it issued them with (schema, fake kernel, autograd registration, AOT dispatch);
* ``test_compile``: ``torch.compile(fullgraph=True)`` traces the call and agrees with eager;
* ``test_deterministic_backward`` (``deterministic=True``): gradients bit-identical across runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from helpers import (
    TOLERANCES,
    assert_compile_matches_eager,
    assert_gradcheck,
    assert_matches_reference,
    assert_opcheck,
    device_backends,
    dtypes_for,
)
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class OpSpec:
    """What the battery needs to know about one public op.

    ``run(*inputs, backend)`` calls the public function; ``reference(*inputs)`` the reference;
    ``make_inputs(shape, dtype, device, generator)`` returns random inputs (never zeros) for one
    of ``shapes`` (name -> shape descriptor, passed through untouched). The output must be one
    tensor: reduce tuples in ``run``/``reference``. ``images``: indices of 4-D inputs that may
    be channels_last. ``gradcheck_shapes``: the shapes for float64 gradcheck (none: skip);
    ``compile``: include the compile test; ``tol``: per-dtype overrides of helpers.TOLERANCES;
    ``dtypes``: the floating dtypes the op accepts; ``differentiable``: compare gradients."""

    name: str
    run: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    make_inputs: Callable[..., tuple]
    shapes: dict[str, object]
    images: tuple[int, ...] = ()
    gradcheck_shapes: tuple[str, ...] = ()
    compile: bool = True
    deterministic: bool = False
    differentiable: bool = True
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    tol: dict = field(default_factory=dict)
    equal_nan: bool = False


def _inputs(spec: OpSpec, shape: str, dtype: torch.dtype, device: str, seed: int = 0) -> tuple:
    return tuple(spec.make_inputs(spec.shapes[shape], dtype, device, torch.Generator().manual_seed(seed)))


def _tol(spec: OpSpec, dtype: torch.dtype) -> dict:
    return spec.tol.get(dtype, TOLERANCES[dtype])


def _non_contiguous(t):
    """The same values through a strided view (every other element of a buffer twice as wide)."""
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.numel() == 0:
        return t
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


class _OpCallRecorder(TorchDispatchMode):
    """Captures the pyops operators (and their arguments) a public call issues."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in ("pyops", "pyops_triton"):
            self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach().requires_grad_(value.is_floating_point())
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


def battery(spec: OpSpec) -> type:
    """A pytest test class running the shared battery on ``spec`` (see the module docstring)."""
    params = device_backends()

    def dtypes(device, backend):
        return [d for d in dtypes_for(device, backend) if d in spec.dtypes]

    class Battery:
        @pytest.mark.parametrize("device,backend", params)
        @pytest.mark.parametrize("shape", list(spec.shapes))
        def test_matches_reference(self, device, backend, shape):
            for dtype in dtypes(device, backend):
                inputs = _inputs(spec, shape, dtype, device)
                assert_matches_reference(
                    lambda *a: spec.run(*a, backend=backend), spec.reference, inputs,
                    backward=spec.differentiable, tol=_tol(spec, dtype), equal_nan=spec.equal_nan,
                )

        @pytest.mark.parametrize("device,backend", params)
        @pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
        def test_layouts(self, device, backend, layout):
            if layout == "channels_last" and not spec.images:
                pytest.skip(f"{spec.name} takes no images")
            inputs = list(_inputs(spec, next(iter(spec.shapes)), torch.float32, device))
            for i, t in enumerate(inputs):
                if layout == "channels_last" and i in spec.images:
                    inputs[i] = t.to(memory_format=torch.channels_last)
                elif layout == "non_contiguous":
                    inputs[i] = _non_contiguous(t)
            assert_matches_reference(
                lambda *a: spec.run(*a, backend=backend), spec.reference, inputs,
                backward=spec.differentiable, tol=_tol(spec, torch.float32), equal_nan=spec.equal_nan,
            )

        @pytest.mark.parametrize("device,backend", params)
        def test_gradcheck(self, device, backend):
            if not spec.gradcheck_shapes or not spec.differentiable:
                pytest.skip(f"{spec.name}: no gradcheck declared")
            if torch.float64 not in dtypes(device, backend):
                pytest.skip(f"backend {backend!r} does not compute in float64")
            for shape in spec.gradcheck_shapes:
                inputs = _inputs(spec, shape, torch.float64, device)
                assert_gradcheck(lambda *a: spec.run(*a, backend=backend), inputs)

        @pytest.mark.parametrize("device,backend", params)
        def test_opcheck(self, device, backend):
            inputs = _inputs(spec, next(iter(spec.shapes)), torch.float32, device)
            leaves = [_detached(t) for t in inputs]
            with _OpCallRecorder() as rec:
                out = spec.run(*leaves, backend=backend)
                if spec.differentiable and out.requires_grad:
                    torch.autograd.grad(out, [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad],
                                        torch.randn_like(out), allow_unused=True)
            assert rec.calls, f"pyops.{spec.name} on backend {backend!r} issued no pyops operator"
            seen = set()
            for func, args, kwargs in rec.calls:
                if func in seen:
                    continue
                seen.add(func)
                assert_opcheck(func, [_detached(a) for a in args], {k: _detached(v) for k, v in kwargs.items()})

        @pytest.mark.parametrize("device,backend", params)
        def test_compile(self, device, backend):
            if not spec.compile:
                pytest.skip(f"{spec.name}: no compile test declared")
            inputs = _inputs(spec, next(iter(spec.shapes)), torch.float32, device)
            assert_compile_matches_eager(lambda *a: spec.run(*a, backend=backend), inputs)

        @pytest.mark.parametrize("device,backend", params)
        def test_deterministic_backward(self, device, backend):
            if not spec.deterministic:
                pytest.skip(f"{spec.name}: determinism not promised")
            inputs = _inputs(spec, next(iter(spec.shapes)), torch.float32, device)
            grads = []
            for _ in range(2):
                leaves = [_detached(t) for t in inputs]
                out = spec.run(*leaves, backend=backend)
                g = torch.ones_like(out)
                grads.append(torch.autograd.grad(out, [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad], g))
            for a, b in zip(*grads):
                assert torch.equal(a, b)

    Battery.__name__ = f"Test{''.join(p.title() for p in spec.name.split('_'))}Battery"
    return Battery
