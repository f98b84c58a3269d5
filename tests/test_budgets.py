"""Dispatch budgets (pyops._budget): every public op and module, on fake CUDA tensors, makes at
most its declared number of operator calls and never synchronises with the host.

Fake tensors (``FakeTensorMode``) carry a CUDA device without a GPU: the Python side of every GPU
code path runs for real (argument checks, backend choice, host glue), the operators run their
fake kernels, and any read of device data (``.item()``, ``.tolist()``, ``nonzero``, ``.cpu()``)
is caught. Backward passes are counted on fake CPU tensors (autograd's CUDA engine needs a
device). The Triton host glue is checked for syncs on real CPU tensors under the interpreter.
On a GPU, ``test_gpu_*`` run each case under ``torch.cuda.set_sync_debug_mode("error")`` and
capture it in a CUDA graph.

A public op without a budget or without a case here fails ``test_every_public_op_has_a_budget``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import HAS_CUDA, requires_cuda
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode, unset_fake_temporarily

import pyops
from pyops import _budget
from pyops._backend import triton_interpreted

# Public names that are not ops (configuration, constructors of parameters, errors, constants).
NOT_OPS = {
    "ada": "the ADA module (its ops are listed by name below)",
    "BACKENDS": "a constant",
    "extension_error": "a value",
    "ExtensionUnavailableError": "an exception class",
    "get_backend": "configuration",
    "set_backend": "configuration",
    "use_backend": "configuration",
    "init_projection": "in-place initialisation of a parameter, not a hot path",
    "shared_projection": "creates a Parameter, not a hot path",
}
ADA_OPS = ("augment", "geometric_color", "filter_noise_cutout", "AugmentPipe", "AdaController", "rv_heuristic")

# Known violations, each with the issue that removes it. A listed case that passes fails the test
# (strict xfail): take it off the list.
KNOWN_SYNCS: dict[str, str] = {}
# On fake CPU tensors (the backward test) only reads of tensor values still fail.
KNOWN_VALUE_READS: dict[str, str] = {}


def public_ops() -> dict[str, object]:
    ops = {n: getattr(pyops, n) for n in pyops.__all__ if n not in NOT_OPS}
    ops.update({f"ada.{n}": getattr(pyops.ada, n) for n in ADA_OPS})
    return {n: f for n, f in ops.items() if not (n.startswith("ada.") and n[4:] in ops)}


@dataclass(frozen=True)
class Case:
    """``build(device)`` makes the inputs on ``device`` and returns ``(call, grad_inputs)``: a
    zero-argument callable making one public call, and the tensors to differentiate its output
    with respect to (empty: no backward)."""

    build: Callable[[str], tuple[Callable[[], object], list]]


def _randn(*shape, device, requires_grad=False):
    return torch.randn(*shape, device=device).requires_grad_(requires_grad)


def _rand(*shape, device):
    return torch.rand(*shape, device=device)


def _in_fake_mode() -> bool:
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def _outside_fake_mode(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module with real (CPU) parameters even under FakeTensorMode."""
    with unset_fake_temporarily():
        return make()


def _on_device(t: torch.Tensor, device: str) -> torch.Tensor:
    """A real CPU tensor moved to ``device``; under FakeTensorMode a fake tensor of its shape."""
    if _in_fake_mode():
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return t.detach().to(device)


def _module_call(make: Callable[[], torch.nn.Module], device: str):
    """A module's forward with its parameters and buffers on ``device`` (functional call), and
    the parameters that require grad."""
    module = _outside_fake_mode(make)
    state = {
        name: _on_device(t, device).requires_grad_(t.requires_grad)
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    return functools.partial(torch.func.functional_call, module, state), [t for t in state.values() if t.requires_grad]


# ---- the cases, one per public op -------------------------------------------------------------


def _point_sample(device):
    x, c = _randn(2, 8, 16, 16, device=device, requires_grad=True), _rand(2, 50, 2, device=device).requires_grad_()
    return (lambda: pyops.point_sample(x, c)), [x, c]


def _fine_grained(device):
    feats = [_randn(2, 8, 16, 16, device=device, requires_grad=True), _randn(2, 4, 8, 8, device=device, requires_grad=True)]
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 30.0]], device=device), torch.tensor([[1.0, 2.0, 9.0, 9.0], [3.0, 3.0, 40.0, 50.0]], device=device)]
    pts = _rand(3, 20, 2, device=device)
    return (lambda: pyops.point_sample_fine_grained_features(feats, [0.25, 0.125], boxes, pts)[0]), feats


def _uncertain(device):
    logits = _randn(3, 2, 16, 16, device=device)
    classes = torch.tensor([0, 1, 1], device=device)
    return (lambda: pyops.get_uncertain_point_coords_with_randomness(
        logits, functools.partial(pyops.calculate_uncertainty, classes=classes), 20, 3.0, 0.75)), []


def _on_grid(device):
    u = _randn(3, 1, 16, 16, device=device)
    return (lambda: pyops.get_uncertain_point_coords_on_grid(u, 20)), []


def _subdivision_step(device):
    logits = _randn(3, 7, 7, device=device)
    return (lambda: pyops.subdivision_step(logits, 30)), []


def _subdivision_inference(device):
    coarse = _randn(3, 2, 7, 7, device=device)
    classes = torch.tensor([0, 1, 1], device=device)
    head = lambda coords, indices: coords.sum(-1)  # noqa: E731  (R, P) logits, one cheap op
    return (lambda: pyops.subdivision_inference(coarse, head, classes=classes, num_steps=2, num_points=30)), []


def _sample_points_for_loss(device):
    logits = _randn(3, 1, 16, 16, device=device, requires_grad=True)
    gt = _rand(3, 64, 64, device=device) > 0.5
    return (lambda: pyops.sample_points_for_loss(logits, gt, 40)[1]), [logits]


def _linformer_project(device):
    x, E = _randn(2, 4, 64, 16, device=device, requires_grad=True), _randn(64, 8, device=device, requires_grad=True)
    return (lambda: pyops.linformer_project(x, E)), [x, E]


def _linformer_attention(device):
    q, k, v = (_randn(2, 4, 64, 16, device=device, requires_grad=True) for _ in range(3))
    E = _randn(64, 8, device=device, requires_grad=True)
    return (lambda: pyops.linformer_attention(q, k, v, E)), [q, k, v, E]


def _linformer_module(device):
    fn, params = _module_call(lambda: pyops.LinformerSelfAttention(64, 128, k=16, heads=4), device)
    x = _randn(2, 128, 64, device=device, requires_grad=True)
    return (lambda: fn((x,))), [x, *params]


def _sac_conv2d(device):
    fn, params = _module_call(lambda: pyops.SAConv2d(8, 8, 3, padding=1), device)
    x = _randn(2, 8, 16, 16, device=device, requires_grad=True)
    return (lambda: fn((x,))), [x, *params]


def _sac_functional(device):
    m = _outside_fake_mode(lambda: pyops.SAConv2d(8, 8, 3, padding=1))
    tensors = [
        _on_device(t, device).requires_grad_()
        for t in (m.weight, m.weight_gamma, m.weight_beta, m.weight_diff, m.switch.weight, m.switch.bias,
                  m.pre_context.weight, m.pre_context.bias, m.post_context.weight, m.post_context.bias, m.bias)
    ]
    x = _randn(2, 8, 16, 16, device=device, requires_grad=True)
    return (lambda: pyops.sac_conv2d(x, *tensors, padding=1)), [x, *tensors]


def _deform_conv2d(device):
    x = _randn(2, 8, 12, 12, device=device, requires_grad=True)
    offset = _randn(2, 18, 12, 12, device=device, requires_grad=True)
    weight = _randn(8, 8, 3, 3, device=device, requires_grad=True)
    bias = _randn(8, device=device, requires_grad=True)
    return (lambda: pyops.deform_conv2d(x, offset, weight, bias, 1, 1, 1)), [x, offset, weight, bias]


def _images(device, requires_grad=True, size=32):
    return (torch.rand(2, 3, size, size, device=device) * 2 - 1).requires_grad_(requires_grad)


def _geometric_color(device, size=32):
    x = _images(device, size=size)
    G = torch.eye(3, device=device).repeat(2, 1, 1)
    G[:, :2] += 0.01 * _randn(2, 2, 3, device=device)
    C = torch.eye(4, device=device).repeat(2, 1, 1)
    return (lambda: pyops.ada.geometric_color(x, G, C)), [x]


def _filter_noise_cutout(device, size=32):
    x = _images(device, size=size)
    filters = _randn(2, 43, device=device)
    boxes = torch.full((2, 4), 0.25, device=device)
    return (lambda: pyops.ada.filter_noise_cutout(x, filters, None, None, boxes)), [x]


def _augment(device):
    x = _images(device)
    G = torch.eye(3, device=device).repeat(2, 1, 1)
    return (lambda: pyops.ada.augment(x, G_inv=G)), [x]


def _augment_pipe(device):
    fn, _ = _module_call(lambda: pyops.AugmentPipe.from_preset("bgc", p=0.6), device)
    x = _images(device)
    return (lambda: fn((x,))), [x]


def _ada_controller(device):
    pipe = _outside_fake_mode(lambda: pyops.AugmentPipe.from_preset("bgc", p=0.6))
    pipe.p = _on_device(pipe.p, device)
    ada = pyops.AdaController(pipe, interval=1)
    logits = _randn(16, 1, device=device)
    return (lambda: ada.update(logits)), []


def _rv_heuristic(device):
    a, b, c = (_randn(16, device=device) for _ in range(3))
    return (lambda: pyops.rv_heuristic(a, b, c)), []


def _uncertainty(device):
    logits, classes = _randn(3, 2, 8, 8, device=device), torch.tensor([0, 1, 1], device=device)
    return (lambda: pyops.calculate_uncertainty(logits, classes)), []


def _uncertainty_sem_seg(device):
    logits = _randn(2, 5, 8, 8, device=device)
    return (lambda: pyops.calculate_uncertainty_sem_seg(logits)), []


def _grid_coords(device):
    return (lambda: pyops.generate_regular_grid_point_coords(3, 7, device)), []


def _coords_wrt_image(device):
    boxes, pts = _rand(3, 4, device=device), _rand(3, 20, 2, device=device)
    return (lambda: pyops.get_point_coords_wrt_image(boxes, pts)), []


CASES: dict[str, Case] = {
    "point_sample": Case(_point_sample),
    "point_sample_fine_grained_features": Case(_fine_grained),
    "get_uncertain_point_coords_with_randomness": Case(_uncertain),
    "get_uncertain_point_coords_on_grid": Case(_on_grid),
    "subdivision_step": Case(_subdivision_step),
    "subdivision_inference": Case(_subdivision_inference),
    "sample_points_for_loss": Case(_sample_points_for_loss),
    "calculate_uncertainty": Case(_uncertainty),
    "calculate_uncertainty_sem_seg": Case(_uncertainty_sem_seg),
    "generate_regular_grid_point_coords": Case(_grid_coords),
    "get_point_coords_wrt_image": Case(_coords_wrt_image),
    "linformer_project": Case(_linformer_project),
    "linformer_attention": Case(_linformer_attention),
    "LinformerSelfAttention": Case(_linformer_module),
    "sac_conv2d": Case(_sac_functional),
    "SAConv2d": Case(_sac_conv2d),
    "deform_conv2d": Case(_deform_conv2d),
    "AugmentPipe": Case(_augment_pipe),
    "AdaController": Case(_ada_controller),
    "rv_heuristic": Case(_rv_heuristic),
    "ada.augment": Case(_augment),
    "ada.geometric_color": Case(_geometric_color),
    "ada.filter_noise_cutout": Case(_filter_noise_cutout),
}


def _budget_of(name: str) -> _budget.Budget:
    target = public_ops()[name]
    if isinstance(target, type) and not issubclass(target, torch.nn.Module):
        target = target.update  # AdaController: its per-step call
    found = _budget.budget_of(target)
    assert found is not None, f"pyops.{name} declares no budget (pyops._budget.budget beside its definition)"
    return found


def _known(name: str, table: dict[str, str]):
    bare = name.removeprefix("ada.")
    reason = table.get(name) or table.get(bare)
    raises = (_budget.HostSync, DataDependentOutputException)
    return [pytest.mark.xfail(reason=reason, strict=True, raises=raises)] if reason else []


def _case_params(table: dict[str, str] | None = None):
    return [pytest.param(name, id=name, marks=_known(name, table or {})) for name in sorted(CASES)]


def _record(call: Callable[[], object], grads: list, *, backward: bool):
    """Run ``call`` (and its backward) under a raising recorder: (forward calls, backward calls)."""
    with _budget.DispatchRecorder(raise_on_sync=True) as fwd:
        out = call()
    if not backward or not grads:
        return fwd, None
    out = out[0] if isinstance(out, (tuple, list)) else out
    grad_out = torch.ones_like(out)
    with _budget.DispatchRecorder(raise_on_sync=True) as bwd:
        torch.autograd.grad(out, grads, grad_out, allow_unused=True)
    return fwd, bwd


def test_every_public_op_has_a_budget():
    ops = public_ops()
    assert set(ops) == set(CASES), f"public ops without a case: {set(ops) - set(CASES)}; cases of no op: {set(CASES) - set(ops)}"
    missing = []
    for name in ops:
        try:
            _budget_of(name)
        except AssertionError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("name", _case_params(KNOWN_SYNCS))
def test_forward_on_cuda_within_budget_and_no_sync(name):
    budget = _budget_of(name)
    with FakeTensorMode():
        call, _ = CASES[name].build("cuda")
        fwd, _ = _record(call, [], backward=False)
    assert fwd.count <= budget.forward, f"pyops.{name}: {fwd.count} calls > budget {budget.forward}: {fwd.names()}"


@pytest.mark.parametrize("name", _case_params(KNOWN_VALUE_READS))
def test_backward_within_budget_and_no_sync(name):
    budget = _budget_of(name)
    with FakeTensorMode():
        call, grads = CASES[name].build("cpu")
        _, bwd = _record(call, grads, backward=True)
    if bwd is None:
        assert budget.backward is None, f"pyops.{name} states a backward budget but its case has no gradient"
        return
    assert budget.backward is not None, f"pyops.{name} has a backward but states no backward budget"
    assert bwd.count <= budget.backward, f"pyops.{name}: backward {bwd.count} calls > budget {budget.backward}: {bwd.names()}"


# ---- the Triton host glue, on real CPU tensors under the interpreter ---------------------------

# the interpreter is slow: the ADA stages on the smallest images they take
TRITON_CASES = {
    "point_sample": _point_sample,
    "subdivision_step": _subdivision_step,
    "linformer_attention": _linformer_attention,
    "sac_conv2d": _sac_functional,
    "ada.geometric_color": functools.partial(_geometric_color, size=6),
    "ada.filter_noise_cutout": functools.partial(_filter_noise_cutout, size=22),
}


@pytest.mark.skipif(not triton_interpreted() or HAS_CUDA, reason="the interpreter runs Triton on CPU tensors")
@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_host_glue_does_not_sync(name):
    # pyops_triton operators run their Python implementation below the dispatcher's Python key;
    # inline_triton runs them inside the recorder, so it sees every operator the host glue issues
    with pyops.use_backend("triton"):
        call, grads = TRITON_CASES[name]("cpu")
        with _budget.DispatchRecorder(raise_on_sync=True, inline_triton=True) as rec:
            out = call()
            if grads:
                torch.autograd.grad(out, grads, torch.ones_like(out), allow_unused=True)
    assert any(c.name.startswith("pyops_triton.") for c in rec.calls), rec.names()


# ---- on a GPU: sync debug mode and CUDA graph capture -----------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("name", _case_params(KNOWN_SYNCS))
def test_gpu_no_sync_and_graph_capture(name):
    call, _ = CASES[name].build("cuda")
    call()  # warm-up: compilation, autotuning, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        call()
    except RuntimeError as exc:
        raise _budget.HostSync(str(exc)) from exc
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        call()
    graph.replay()
    torch.cuda.synchronize()


def test_recorder_flags_a_sync_and_counts():
    # the checker itself: .item() of device data is a sync; views are not counted
    with FakeTensorMode():
        x = torch.randn(4, device="cuda")
        with _budget.DispatchRecorder() as rec:
            y = (x * 2).view(2, 2)
            try:
                y.sum().item()
            except Exception:  # fake tensors cannot produce the value
                pass
        assert rec.syncs == ["aten._local_scalar_dense"]
        assert rec.names()[:2] == ["aten.mul", "aten.sum"]
        with _budget.DispatchRecorder() as rec:
            x.cpu()
        assert rec.syncs == ["aten._to_copy"]
    assert inspect.isfunction(_budget.budget(1)(lambda: None))
