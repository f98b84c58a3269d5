"""Checks of every registered op against its reference, for ``python -m pyops``.

Each op family registers an :class:`OpCheck`; :func:`run` evaluates every backend that can run on
this machine on small random inputs, forward and backward, and times it against the reference.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pyops import _backend, _extension


@dataclass(frozen=True)
class OpCheck:
    name: str
    # (device, dtype, generator) -> inputs; floating-point inputs get gradients
    make_inputs: Callable[..., tuple]
    run: Callable[..., torch.Tensor]  # run(*inputs, backend=name)
    reference: Callable[..., torch.Tensor]  # reference(*inputs)
    atol: float = 1e-4
    rtol: float = 1e-4
    differentiable: bool = True  # also compare the gradients of the floating-point inputs


@dataclass
class Result:
    op: str
    device: str
    backend: str
    max_error: float | None = None
    ms: float | None = None
    ref_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


CHECKS: list[OpCheck] = []


def register(check: OpCheck) -> None:
    CHECKS.append(check)


def backends_for(device: torch.device) -> list[str]:
    """The non-reference backends that can run on ``device`` here."""
    if device.type == "cpu":
        return ["cpu", "triton"] if _backend.triton_interpreted() else ["cpu"]
    return ["cuda", "triton"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, repeat: int = 7) -> float:
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _forward_backward(fn: Callable[..., torch.Tensor], inputs: tuple, grad_out_seed: int, differentiable: bool = True):
    leaves = [t.detach().requires_grad_(differentiable and t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    if not differentiable:
        return [out]
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed))
    grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], g.to(out))
    return [out, *grads]


def check_one(check: OpCheck, device: torch.device, backend: str, seed: int = 0) -> Result:
    result = Result(check.name, str(device), backend)
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        result.error = "triton is not installed"
        return result
    try:
        inputs = check.make_inputs(device, torch.float32, torch.Generator().manual_seed(seed))
        run = lambda *a: check.run(*a, backend=backend)  # noqa: E731
        got = _forward_backward(run, inputs, seed, check.differentiable)
        inputs64 = tuple(t.double() if t.is_floating_point() else t for t in inputs)
        want = _forward_backward(check.reference, inputs64, seed, check.differentiable)
        result.max_error = max((a.double() - b).abs().max().item() for a, b in zip(got, want))
        for a, b in zip(got, want):
            if not torch.allclose(a.double(), b, atol=check.atol, rtol=check.rtol, equal_nan=True):
                result.error = f"differs from the reference (max error {result.max_error:.3g})"
        result.ms = _median_ms(lambda: _forward_backward(run, inputs, seed, check.differentiable), device)
        result.ref_ms = _median_ms(lambda: _forward_backward(check.reference, inputs, seed, check.differentiable), device)
    except Exception as exc:  # reported in the table, turns the exit status non-zero
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def run() -> list[Result]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return [
        check_one(check, device, backend)
        for check in CHECKS
        for device in devices
        for backend in backends_for(device)
    ]


def build_info() -> list[tuple[str, str]]:
    import pyops

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    if _extension.available():
        compiled = "cpu" + (", cuda" if _extension.with_cuda() else "")
        compiled += " (OpenMP)" if _extension.with_openmp() else ""
    else:
        compiled = f"none: pyops._C failed to load ({_extension.load_error}); {_extension.REBUILD_HINT}"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return [
        ("pyops", pyops.__version__),
        ("torch", torch.__version__),
        ("triton", triton_version + (" (interpreter)" if _backend.triton_interpreted() else "")),
        ("CUDA (torch)", str(torch.version.cuda)),
        ("compiled kernels", compiled),
        ("GPU", gpu),
        ("CPU threads", str(torch.get_num_threads())),
    ]
