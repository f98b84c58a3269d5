"""Test helpers shared by every op family: device/backend parametrization, comparison with the
reference (forward and backward, per-dtype tolerances), gradcheck, opcheck, compile vs eager."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import pytest
import torch

from pyops._backend import triton_interpreted

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

# Tolerances for comparing a backend with the reference run on the same inputs.
TOLERANCES = {
    torch.float64: dict(atol=1e-9, rtol=1e-7),
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


def device_backends() -> list:
    """pytest params (device, backend) for every non-reference backend. GPU cases are marked
    ``gpu`` and skipped without CUDA; Triton on CPU runs under the interpreter."""
    params = [pytest.param("cpu", "cpu", id="cpu-cpu")]
    if HAS_TRITON and not HAS_CUDA and triton_interpreted():
        params.append(pytest.param("cpu", "triton", id="cpu-triton"))
    for backend in ("cuda", "triton"):
        params.append(pytest.param("cuda", backend, id=f"cuda-{backend}", marks=[pytest.mark.gpu, requires_cuda]))
    return params


def dtypes_for(device: str, backend: str) -> list[torch.dtype]:
    """Float dtypes a backend is tested in (the Triton interpreter computes bfloat16 wrongly)."""
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    if backend == "triton" and device == "cpu":
        dtypes.remove(torch.bfloat16)
    return dtypes


def _leaves(inputs: Sequence, requires_grad: bool) -> list:
    return [
        t.detach().clone().requires_grad_(requires_grad) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        for t in inputs
    ]


def assert_matches_reference(
    fn: Callable[..., torch.Tensor],
    reference: Callable[..., torch.Tensor],
    inputs: Sequence,
    *,
    backward: bool = True,
    tol: dict | None = None,
    equal_nan: bool = False,
) -> None:
    """``fn(*inputs)`` equals ``reference(*inputs)`` in value, dtype and shape, and so do the
    gradients of every floating-point input under a random output gradient."""
    got_in, want_in = _leaves(inputs, backward), _leaves(inputs, backward)
    got, want = fn(*got_in), reference(*want_in)
    tol = tol or TOLERANCES[want.dtype]
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    torch.testing.assert_close(got, want, equal_nan=equal_nan, **tol)
    if not backward:
        return
    # a fixed output gradient: results do not depend on which tests ran before
    g = torch.randn(want.shape, dtype=torch.float32, generator=torch.Generator().manual_seed(1234)).to(want)
    diff = [i for i, t in enumerate(got_in) if isinstance(t, torch.Tensor) and t.requires_grad]
    got_g = torch.autograd.grad(got, [got_in[i] for i in diff], g)
    want_g = torch.autograd.grad(want, [want_in[i] for i in diff], g)
    for i, a, b in zip(diff, got_g, want_g):
        torch.testing.assert_close(
            a, b, equal_nan=equal_nan, msg=lambda m, i=i: f"gradient of input {i}: {m}", **(tol or TOLERANCES[b.dtype])
        )


def assert_gradcheck(fn: Callable[..., torch.Tensor], inputs: Sequence, gradgrad: bool = False) -> None:
    """float64 finite-difference check of every floating-point input's gradient."""
    leaves = [t.double().requires_grad_() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)
    if gradgrad:
        assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


def ops_for(backend: str):
    """The operator namespace of ``backend``: Triton kernels are registered as ``pyops_triton::<op>``
    (pyops/_registry.py), the C++ CPU/CUDA kernels as ``pyops::<op>``."""
    return torch.ops.pyops_triton if backend == "triton" else torch.ops.pyops


def assert_opcheck(op, args: Sequence, kwargs: dict | None = None) -> None:
    """torch.library.opcheck: schema, fake kernel, autograd registration, AOT dispatch."""
    result = torch.library.opcheck(op, tuple(args), kwargs or {})
    failures = {name: status for name, status in result.items() if status != "SUCCESS"}
    assert not failures, failures


def assert_compile_matches_eager(fn: Callable, inputs: Sequence, backend: str = "aot_eager") -> None:
    """``torch.compile(fn, fullgraph=True)`` traces without graph breaks and agrees with eager,
    forward and backward."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    assert_matches_reference(compiled, fn, inputs, tol=dict(atol=1e-6, rtol=1e-5))
