"""Calling pyops from outside eager PyTorch: arrays of other frameworks through DLPack,
TorchScript, C++ through the dispatcher, torch.export and AOTInductor."""

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pyops
from pyops._interop import _to_torch, accepts_arrays
from pyops.sac import random_parameters

ROOT = Path(__file__).resolve().parent.parent


class PointHead(torch.nn.Module):
    """A small PointRend-style head: sample features at points, then a 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Conv1d(6, 3, 1)

    def forward(self, features, coords):
        return self.fc(pyops.point_sample(features, coords)).relu()


def test_torch_export_and_aotinductor(tmp_path):
    torch.manual_seed(0)
    model = PointHead().eval()
    inputs = (torch.randn(2, 6, 10, 12), torch.rand(2, 40, 2))
    exported = torch.export.export(model, inputs)
    assert any("pyops.point_sample" in str(node.target) for node in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(*inputs), model(*inputs))

    package = torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp_path / "point_head.pt2"))
    compiled = torch._inductor.aoti_load_package(package)
    torch.testing.assert_close(compiled(*inputs), model(*inputs))


def test_numpy_arrays_in_and_out():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6), dtype=np.float32)
    c = rng.random((2, 7, 2), dtype=np.float32)
    out = pyops.point_sample(x, c)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 7)
    np.testing.assert_array_equal(out, pyops.point_sample(torch.from_numpy(x), torch.from_numpy(c)).numpy())

    # tuple results and list arguments come back as NumPy too
    logits = rng.standard_normal((3, 1, 8, 8), dtype=np.float32)
    up, indices, coords = pyops.subdivision_step(logits[:, 0], 10)
    assert isinstance(up, np.ndarray) and indices.dtype == np.int64 and coords.shape == (3, 10, 2)
    boxes = [np.array([[0.0, 0.0, 16.0, 16.0]], dtype=np.float32), np.array([[2.0, 2.0, 9.0, 12.0]], dtype=np.float32)]
    features, image_coords = pyops.point_sample_fine_grained_features([x], [0.5], boxes, c)
    assert isinstance(features, np.ndarray) and features.shape == (2, 3, 7)
    assert isinstance(image_coords, np.ndarray)


def test_jax_arrays_in_and_out():
    jnp = pytest.importorskip("jax.numpy")
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6), dtype=np.float32)
    c = np.random.default_rng(2).random((2, 7, 2), dtype=np.float32)
    out = pyops.point_sample(jnp.asarray(x), jnp.asarray(c))
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    np.testing.assert_array_equal(np.asarray(out), pyops.point_sample(x, c))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cupy_arrays_on_a_side_stream():
    cupy = pytest.importorskip("cupy")
    x = cupy.random.standard_normal((4, 32, 50, 60), dtype=cupy.float32)
    c = cupy.random.random((4, 999, 2), dtype=cupy.float32)
    with cupy.cuda.Stream(non_blocking=True) as stream:  # DLPack orders torch's work after it
        out = pyops.point_sample(x, c)
        stream.synchronize()
    assert isinstance(out, cupy.ndarray)
    want = pyops.point_sample(torch.from_dlpack(x), torch.from_dlpack(c)).cpu().numpy()
    np.testing.assert_allclose(cupy.asnumpy(out), want, rtol=1e-6, atol=1e-6)


def _numpy(*tensors):
    return [None if t is None else t.numpy() for t in tensors]


def _linformer_inputs(rng):
    q, k, v = (rng.standard_normal((2, 3, 13, 8), dtype=np.float32) for _ in range(3))
    E, F = (0.3 * rng.standard_normal((16, 5), dtype=np.float32) for _ in range(2))
    mask = rng.random((2, 13)) < 0.3
    return q, k, v, E, F, mask


def test_numpy_round_trip_linformer():
    q, k, v, E, F, mask = _linformer_inputs(np.random.default_rng(3))
    out = pyops.linformer_attention(q, k, v, E, F, key_padding_mask=mask)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == q.shape
    t = [torch.from_numpy(a) for a in (q, k, v, E, F, mask)]
    want = pyops.linformer_attention(*t[:5], key_padding_mask=t[5])
    np.testing.assert_array_equal(out, want.numpy())
    projected = pyops.linformer_project(k, E, mask)
    assert isinstance(projected, np.ndarray)
    np.testing.assert_array_equal(projected, pyops.linformer_project(t[1], t[3], t[5]).numpy())


def test_numpy_round_trip_sac():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 10, 9), dtype=np.float32)
    params = random_parameters(4, 6, generator=torch.Generator().manual_seed(5))
    out = pyops.sac_conv2d(x, *_numpy(*params), stride=1, padding=2, dilation=2)
    assert isinstance(out, np.ndarray) and out.shape == (2, 6, 10, 9)
    want = pyops.sac_conv2d(torch.from_numpy(x), *params, stride=1, padding=2, dilation=2)
    np.testing.assert_array_equal(out, want.numpy())


def test_numpy_round_trip_ada():
    rng = np.random.default_rng(6)
    images = rng.uniform(-1, 1, (3, 3, 24, 24)).astype(np.float32)
    angle = rng.uniform(-0.5, 0.5, 3)
    G = np.zeros((3, 3, 3), dtype=np.float32)
    G[:, 0, 0], G[:, 0, 1], G[:, 1, 0], G[:, 1, 1] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    G[:, 2, 2] = 1
    C = (np.eye(4) + 0.1 * rng.standard_normal((3, 4, 4))).astype(np.float32)
    gains = rng.uniform(0.5, 1.5, (3, 4)).astype(np.float32)
    boxes = rng.uniform(0.2, 0.6, (3, 4)).astype(np.float32)
    out = pyops.ada.augment(images, G_inv=G, C=C, filter_gains=gains, cutout_boxes=boxes)
    assert isinstance(out, np.ndarray) and out.shape == images.shape
    t = {k: torch.from_numpy(a) for k, a in dict(G_inv=G, C=C, filter_gains=gains, cutout_boxes=boxes).items()}
    np.testing.assert_array_equal(out, pyops.ada.augment(torch.from_numpy(images), **t).numpy())
    r_v = pyops.rv_heuristic(np.array([2.0, 1.0]), np.array([1.0]), np.array([-1.0, 0.0]))
    assert isinstance(r_v, np.ndarray) and r_v.shape == () and np.isclose(r_v, (1.5 - 1.0) / (1.5 + 0.5))


def test_arrays_are_taken_zero_copy():
    a = np.random.default_rng(7).standard_normal((3, 4), dtype=np.float32)
    t = _to_torch("op", "x", a)
    assert t.data_ptr() == a.ctypes.data and t.shape == a.shape
    result = torch.arange(6.0)
    out = accepts_arrays(lambda x: result)(a)  # results come back zero-copy too
    assert isinstance(out, np.ndarray) and out.ctypes.data == result.data_ptr()


def test_readonly_arrays_get_a_clear_error():
    q, k, v, E, _, _ = _linformer_inputs(np.random.default_rng(8))
    k.flags.writeable = False
    with pytest.raises(TypeError, match=r"linformer_attention: k is a read-only numpy.ndarray .*k.copy\(\)"):
        pyops.linformer_attention(q, k, v, E)
    broadcast = np.broadcast_to(np.ones((1, 1, 1, 1), dtype=np.float32), (1, 3, 5, 5))
    with pytest.raises(TypeError, match="ada.geometric_color: images is a read-only numpy.ndarray"):
        pyops.ada.geometric_color(broadcast)
    np.testing.assert_array_equal(  # the copy the message suggests works
        pyops.linformer_attention(q, k.copy(), v, E), pyops.linformer_attention(q, np.array(k), v, E)
    )


class ArrayWithoutDLPack:
    """An array-like that offers only NumPy's array interface."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a


def test_unsupported_arrays_get_a_clear_error():
    x = np.random.rand(1, 2, 4, 4).astype(np.float32)
    reversed_points = np.random.rand(1, 5, 2).astype(np.float32)[:, ::-1]
    with pytest.raises(TypeError, match="point_sample: cannot take coords, a numpy.ndarray, zero-copy through DLPack"):
        pyops.point_sample(x, reversed_points)
    with pytest.raises(TypeError, match=r"pyops.point_sample: coords must be a .* tensor, got list"):
        pyops.point_sample(x, [[0.5, 0.5]])
    q, k, v, E, _, _ = _linformer_inputs(np.random.default_rng(9))
    with pytest.raises(TypeError, match="linformer_attention: cannot take v, a numpy.ndarray, .*numeric dtype"):
        pyops.linformer_attention(q, k, v.astype(object), E)
    with pytest.raises(TypeError, match="linformer_project: E is a .*ArrayWithoutDLPack, which does not implement"):
        pyops.linformer_project(torch.from_numpy(k), ArrayWithoutDLPack(E))
    params = _numpy(*random_parameters(4, 6))
    params[1] = ArrayWithoutDLPack(params[1])
    with pytest.raises(TypeError, match="sac_conv2d: weight_gamma is a .*ArrayWithoutDLPack"):
        pyops.sac_conv2d(np.ones((1, 4, 5, 5), np.float32), *params, padding=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cupy_call_runs_on_cupys_stream():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(10)
    q, k, v, E, F, mask = (cupy.asarray(a) for a in _linformer_inputs(rng))
    stream = cupy.cuda.Stream(non_blocking=True)
    seen = []
    real = torch.ops.pyops.linformer_attend

    def spy(*args):
        seen.append(torch.cuda.current_stream().cuda_stream)
        return real(*args)

    torch.ops.pyops.linformer_attend = spy  # the functional op looks the operator up per call
    try:
        with stream:
            out = pyops.linformer_attention(q, k, v, E, F, key_padding_mask=mask)
            stream.synchronize()
    finally:
        torch.ops.pyops.linformer_attend = real
    assert isinstance(out, cupy.ndarray)
    assert seen == [stream.ptr]
    want = pyops.linformer_attention(*(torch.from_dlpack(a) for a in (q, k, v, E, F)), key_padding_mask=torch.from_dlpack(mask))
    np.testing.assert_allclose(cupy.asnumpy(out), want.cpu().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jax_gpu_arrays_in_and_out():
    jax = pytest.importorskip("jax")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("jax has no GPU device")
    params = random_parameters(4, 6)
    x = np.random.default_rng(11).standard_normal((2, 4, 10, 9), dtype=np.float32)
    out = pyops.sac_conv2d(jax.device_put(x, gpus[0]), *(jax.device_put(p.numpy(), gpus[0]) for p in params), padding=1)
    assert type(out).__module__.split(".")[0] in ("jax", "jaxlib")
    want = pyops.sac_conv2d(torch.from_numpy(x).cuda(), *(p.cuda() for p in params), padding=1)
    np.testing.assert_allclose(np.asarray(out), want.cpu().numpy(), rtol=1e-4, atol=1e-4)


# ---- TorchScript ------------------------------------------------------------------------------


def _script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.x
        return torch.jit.script(module)


def _load(path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


@pytest.mark.parametrize(
    "options",
    [dict(), dict(sharing="kv"), dict(sharing="none"), dict(share_kv=True), dict(one_kv_head=True),
     dict(sharing="none", one_kv_head=True)],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_torchscript_linformer_matches_eager(options, tmp_path):
    torch.manual_seed(0)
    layer = pyops.LinformerSelfAttention(32, seq_len=24, k=7, heads=4, **options).eval()
    scripted = _script(layer)
    x = torch.randn(3, 19, 32)
    mask = torch.rand(3, 19) < 0.25
    torch.testing.assert_close(scripted(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(scripted(x, mask), layer(x, mask), rtol=0, atol=0)
    scripted.save(str(tmp_path / "linformer.pt"))
    torch.testing.assert_close(_load(tmp_path / "linformer.pt")(x, mask), layer(x, mask), rtol=0, atol=0)


def test_torchscript_linformer_layerwise_and_dropout():
    torch.manual_seed(1)
    E = pyops.shared_projection(20, 6)
    model = torch.nn.Sequential(*(pyops.LinformerSelfAttention(16, 20, k=6, heads=2, sharing="layerwise",
                                                               projection=E, dropout=0.3) for _ in range(2)))
    scripted = _script(model)
    x = torch.randn(2, 20, 16)
    torch.testing.assert_close(scripted.eval()(x), model.eval()(x), rtol=0, atol=0)
    # training mode: the dropout seed comes from torch's generator in both
    model.train(), scripted.train()
    torch.manual_seed(2)
    want = model(x)
    torch.manual_seed(2)
    torch.testing.assert_close(scripted(x), want, rtol=0, atol=0)
    with pytest.raises(Exception, match="longer than seq_len"):
        scripted(torch.randn(2, 21, 16))


@pytest.mark.parametrize("geometry", [dict(padding=1), dict(padding=2, dilation=2, bias=False), dict(padding=1, stride=2)])
def test_torchscript_sac_matches_eager(geometry, tmp_path):
    conv = pyops.SAConv2d(4, 6, 3, **geometry)
    params = random_parameters(4, 6, bias=conv.bias is not None, generator=torch.Generator().manual_seed(3))
    names = ["weight", "weight_gamma", "weight_beta", "weight_diff", "switch.weight", "switch.bias",
             "pre_context.weight", "pre_context.bias", "post_context.weight", "post_context.bias", "bias"]
    conv.load_state_dict({n: p for n, p in zip(names, params) if p is not None})
    scripted = _script(conv)
    x = torch.randn(2, 4, 11, 9)
    torch.testing.assert_close(scripted(x), conv(x), rtol=0, atol=0)
    scripted.save(str(tmp_path / "sac.pt"))
    torch.testing.assert_close(_load(tmp_path / "sac.pt")(x), conv(x), rtol=0, atol=0)
    # gradients flow through the scripted module (the operators' autograd)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(scripted(x).square().sum(), x)
    (want,) = torch.autograd.grad(conv(x).square().sum(), x)
    torch.testing.assert_close(grad, want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_torchscript_on_cuda_matches_eager(backend):
    torch.manual_seed(4)
    layer = pyops.LinformerSelfAttention(64, seq_len=40, k=16, heads=4, backend=backend).cuda().eval()
    x = torch.randn(2, 37, 64, device="cuda")
    torch.testing.assert_close(_script(layer)(x), layer(x), rtol=0, atol=0)
    conv = pyops.SAConv2d(8, 16, 3, padding=1, backend=backend).cuda()
    with torch.no_grad():
        conv.switch.weight.normal_(std=0.3)
        conv.weight_diff.normal_(std=0.1)
    x = torch.randn(2, 8, 20, 24, device="cuda")
    torch.testing.assert_close(_script(conv)(x), conv(x), rtol=0, atol=0)


def test_torchscript_augment_pipe_gets_a_clear_error():
    message = r"AugmentPipe cannot be compiled with torch\.jit\.script: .*Use torch\.compile"
    with pytest.raises(NotImplementedError, match=message):
        _script(pyops.AugmentPipe.from_preset("bgc"))
    with pytest.raises(NotImplementedError, match=message):  # also as a submodule
        _script(torch.nn.Sequential(torch.nn.Identity(), pyops.AugmentPipe(xflip=1)))
    pipe = pyops.AugmentPipe(xflip=1, p=1.0)  # eager use is unchanged
    assert pipe(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)


def cmake_hints() -> list[str]:
    """Hints for torch's CMake config on machines whose CUDA toolkit lacks libraries that torch's
    nvidia wheels provide (our CI machines): the toolkit root and nvrtc."""
    hints = []
    if Path("/usr/local/cuda/bin/nvcc").exists():
        hints.append("-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda")
    try:
        import nvidia

        nvrtc = sorted(Path(nvidia.__path__[0]).glob("cu*/lib/libnvrtc.so*"))
        if nvrtc:
            hints.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc[0]}")
    except ImportError:
        pass
    return hints


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cpp_example_calls_ops_through_the_dispatcher(tmp_path):
    build = tmp_path / "build"
    configure = [
        "cmake", "-S", str(ROOT / "examples" / "cpp"), "-B", str(build),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", *cmake_hints(),
    ]
    for command in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)]):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from pyops import _C

    proc = subprocess.run([str(build / "pyops_example"), _C.__file__], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pyops::point_sample [2, 16, 100]" in proc.stdout
