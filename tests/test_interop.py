"""Calling pyops from outside eager PyTorch: C++ through the dispatcher, torch.export and
AOTInductor."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import pyops

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


def test_unsupported_arrays_get_a_clear_error():
    x = np.random.rand(1, 2, 4, 4).astype(np.float32)
    reversed_points = np.random.rand(1, 5, 2).astype(np.float32)[:, ::-1]
    with pytest.raises(TypeError, match="cannot take this numpy.ndarray zero-copy through DLPack"):
        pyops.point_sample(x, reversed_points)
    with pytest.raises(TypeError, match="must be tensors"):
        pyops.point_sample(x, [[0.5, 0.5]])


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
