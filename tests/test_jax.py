"""pyops.jax: the XLA FFI custom calls under jax.jit and jax.grad, against the torch ops on the same
random inputs. CPU cases run everywhere jax is installed; the CUDA cases (marked ``gpu``) need a
JAX CUDA device and a CUDA build of pyops."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
pj = pytest.importorskip("pyops.jax")  # skips cleanly when pyops was built without jax

import jax.numpy as jnp  # noqa: E402

import pyops  # noqa: E402
from pyops import ada  # noqa: E402


def _jax_gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


GPU = _jax_gpu()
requires_jax_gpu = pytest.mark.skipif(
    GPU is None or not pj.WITH_CUDA, reason="needs a JAX CUDA device and a CUDA build of pyops"
)
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("gpu", id="gpu", marks=[pytest.mark.gpu, requires_jax_gpu]),
]
TOL = dict(atol=2e-5, rtol=2e-4)


def _device(name: str):
    return jax.devices("cpu")[0] if name == "cpu" else GPU


def _put(device: str, *arrays):
    dev = _device(device)
    return [None if a is None else jax.device_put(np.asarray(a), dev) for a in arrays]


def _np(x) -> np.ndarray:
    return np.asarray(x.detach()) if isinstance(x, torch.Tensor) else np.asarray(x)


def _close(actual, expected, **tol):
    np.testing.assert_allclose(_np(actual), _np(expected), **(tol or TOL))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _torch_grads(fn, arrays, cotangent):
    """Gradients of <fn(*tensors), cotangent> with respect to every array (torch CPU op)."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(torch.tensor(cotangent))
    return out.detach(), [t.grad for t in ts]


def _jax_grads(fn, arrays, cotangent, device):
    args = _put(device, *arrays)
    out = jax.jit(fn)(*args)
    ct = jax.device_put(cotangent, _device(device))
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * ct), argnums=tuple(range(len(args)))))(*args)
    return out, grads


# ---- point_sample --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 9, 13, 37), (1, 1, 1, 1, 3), (3, 33, 7, 5, 64)])
def test_point_sample_matches_torch(device, align_corners, shape):
    N, C, H, W, P = shape
    rng = _rng(sum(shape))
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    coords = rng.uniform(-0.2, 1.2, (N, P, 2)).astype(np.float32)  # some points outside the map
    g = rng.standard_normal((N, C, P), dtype=np.float32)
    ref, (rx, rc) = _torch_grads(lambda a, b: pyops.point_sample(a, b, align_corners, backend="cpu"), (x, coords), g)
    out, (gx, gc) = _jax_grads(lambda a, b: pj.point_sample(a, b, align_corners), (x, coords), g, device)
    _close(out, ref)
    _close(gx, rx)
    _close(gc, rc, atol=1e-4, rtol=1e-4)


def test_point_sample_grid_coords_and_dtype():
    rng = _rng(1)
    x = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
    coords = rng.uniform(0, 1, (2, 3, 5, 2)).astype(np.float32)
    out = pj.point_sample(jnp.asarray(x, jnp.bfloat16), coords)
    assert out.shape == (2, 4, 3, 5) and out.dtype == jnp.bfloat16
    ref = pyops.point_sample(torch.from_numpy(x).bfloat16(), torch.from_numpy(coords), backend="cpu")
    _close(np.asarray(out.astype(jnp.float32)), ref.float(), atol=2e-2, rtol=2e-2)


def test_point_sample_errors_name_the_argument():
    x = jnp.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match="point_coords"):
        pj.point_sample(x, jnp.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="input"):
        pj.point_sample(jnp.zeros((2, 3, 4)), jnp.zeros((2, 5, 2)))
    with pytest.raises(TypeError, match="input"):
        pj.point_sample(jnp.zeros((2, 3, 4, 4), jnp.int32), jnp.zeros((2, 5, 2)))


# ---- Linformer ----------------------------------------------------------------------------------


LINFORMER_CASES = {
    "shared-E": dict(B=2, H=3, n_q=19, n=23, d=16, k=7, per_head=False, F=False, one_kv=False, mask=False),
    "per-head-EF-mask": dict(B=2, H=2, n_q=23, n=23, d=8, k=70, per_head=True, F=True, one_kv=False, mask=True),
    "one-kv-head": dict(B=1, H=4, n_q=5, n=9, d=33, k=4, per_head=False, F=True, one_kv=True, mask=False),
}


def _linformer_inputs(case: dict, rng):
    B, H, n_q, n, d, k = (case[key] for key in ("B", "H", "n_q", "n", "d", "k"))
    hk = 1 if case["one_kv"] else H
    q = rng.standard_normal((B, H, n_q, d), dtype=np.float32)
    kk = rng.standard_normal((B, hk, n, d), dtype=np.float32)
    v = rng.standard_normal((B, hk, n, d), dtype=np.float32)
    eshape = (H, n + 2, k) if case["per_head"] else (n + 2, k)
    E = (rng.standard_normal(eshape) / np.sqrt(n)).astype(np.float32)
    F = (rng.standard_normal(eshape) / np.sqrt(n)).astype(np.float32) if case["F"] else None
    mask = rng.uniform(size=(B, n)) < 0.3 if case["mask"] else None
    return q, kk, v, E, F, mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(LINFORMER_CASES))
def test_linformer_attention_matches_torch(device, case):
    rng = _rng(len(case))
    q, k, v, E, F, mask = _linformer_inputs(LINFORMER_CASES[case], rng)
    g = rng.standard_normal(q.shape, dtype=np.float32)
    arrays = (q, k, v, E) + ((F,) if F is not None else ())
    mask_t = None if mask is None else torch.from_numpy(mask)

    def torch_fn(q, k, v, E, F=None):
        return pyops.linformer_attention(q, k, v, E, F, key_padding_mask=mask_t, backend="cpu")

    mask_j = None if mask is None else _put(device, mask)[0]

    def jax_fn(q, k, v, E, F=None):
        return pj.linformer_attention(q, k, v, E, F, key_padding_mask=mask_j)

    ref, rgrads = _torch_grads(torch_fn, arrays, g)
    out, grads = _jax_grads(jax_fn, arrays, g, device)
    _close(out, ref)
    for name, a, b in zip("qkvEF", grads, rgrads):
        _close(a, b, atol=1e-4, rtol=1e-3, err_msg=f"gradient of {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_linformer_dropout_mask_matches_torch_kernel(device):
    """With the same seed, the JAX kernels draw the torch kernels' dropout mask (forward and backward)."""
    rng = _rng(7)
    B, H, n, d, k, p, seed = 2, 2, 17, 8, 11, 0.3, 1234
    q, kp, vp = (rng.standard_normal(s, dtype=np.float32) for s in ((B, H, n, d), (B, H, k, d), (B, H, k, d)))
    g = rng.standard_normal(q.shape, dtype=np.float32)
    ref_out, ref_lse = torch.ops.pyops.linformer_attend(*map(torch.from_numpy, (q, kp, vp)), 0.5, p, seed)
    ref_grads = torch.ops.pyops.linformer_attend_backward(
        torch.from_numpy(g), *map(torch.from_numpy, (q, kp, vp)), ref_out, ref_lse, 0.5, p, seed
    )
    args = _put(device, q, kp, vp)
    attend = jax.jit(lambda q, kp, vp: pj._attend(q, kp, vp, 0.5, p, seed))
    _close(attend(*args), ref_out)
    grads = jax.grad(lambda *a: jnp.sum(pj._attend(*a, 0.5, p, seed) * jnp.asarray(g)), argnums=(0, 1, 2))(*args)
    for a, b in zip(grads, ref_grads):
        _close(a, b, atol=1e-4, rtol=1e-3)


def test_linformer_errors_name_the_argument():
    q = jnp.zeros((1, 2, 5, 4))
    with pytest.raises(ValueError, match="E must have shape"):
        pj.linformer_attention(q, q, q, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="causal"):
        pj.linformer_attention(q, q, q, jnp.zeros((5, 2)), causal=True)
    with pytest.raises(TypeError, match="key_padding_mask"):
        pj.linformer_attention(q, q, q, jnp.zeros((5, 2)), key_padding_mask=jnp.zeros((1, 5)))


# ---- ADA ------------------------------------------------------------------------------------------


def _ada_params(B: int, rng):
    """Random but valid per-sample parameters: a rotation + anisotropic scale + translation, a
    colour matrix near the identity, filter taps, noise strengths and cutout boxes."""
    th = rng.uniform(-0.6, 0.6, B)
    s = rng.uniform(0.8, 1.25, (B, 2))
    t = rng.uniform(-3, 3, (B, 2))
    G = np.zeros((B, 3, 3), np.float32)
    G[:, 0, 0], G[:, 0, 1], G[:, 0, 2] = np.cos(th) * s[:, 0], -np.sin(th) * s[:, 1], t[:, 0]
    G[:, 1, 0], G[:, 1, 1], G[:, 1, 2] = np.sin(th) * s[:, 0], np.cos(th) * s[:, 1], t[:, 1]
    G[:, 2, 2] = 1
    C = (np.eye(4) + 0.1 * rng.standard_normal((B, 4, 4))).astype(np.float32)
    C[:, 3] = [0, 0, 0, 1]
    filters = rng.uniform(0, 0.05, (B, 43)).astype(np.float32)
    sigma = rng.uniform(0, 0.2, B).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0, 1, (B, 2)), rng.uniform(0.2, 0.6, (B, 2))], 1).astype(np.float32)
    return G, C, filters, sigma, boxes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stages", ["geom", "color", "both"])
@pytest.mark.parametrize("channels", [1, 3])
def test_ada_geometric_color_matches_torch(device, stages, channels):
    rng = _rng(channels + len(stages))
    B, H, W = 2, 19, 24
    x = rng.standard_normal((B, channels, H, W), dtype=np.float32)
    G, C, *_ = _ada_params(B, rng)
    G = G if stages in ("geom", "both") else None
    C = C if stages in ("color", "both") else None
    g = rng.standard_normal(x.shape, dtype=np.float32)
    Gt = None if G is None else torch.from_numpy(G)
    Ct = None if C is None else torch.from_numpy(C)
    ref, (rx,) = _torch_grads(lambda a: ada.geometric_color(a, Gt, Ct, backend="cpu"), (x,), g)
    Gj, Cj = _put(device, G, C)
    out, (gx,) = _jax_grads(lambda a: pj.ada_geometric_color(a, Gj, Cj), (x,), g, device)
    _close(out, ref, atol=1e-4, rtol=1e-4)
    _close(gx, rx, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stages", ["filter", "noise", "cutout", "all"])
def test_ada_filter_noise_cutout_matches_torch(device, stages):
    rng = _rng(len(stages))
    B, Cc, H, W = 2, 3, 24, 29
    x = rng.standard_normal((B, Cc, H, W), dtype=np.float32)
    _, _, filters, sigma, boxes = _ada_params(B, rng)
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    use = {"filter": stages in ("filter", "all"), "noise": stages in ("noise", "all"), "cutout": stages in ("cutout", "all")}
    params = (filters if use["filter"] else None, sigma if use["noise"] else None,
              noise if use["noise"] else None, boxes if use["cutout"] else None)
    g = rng.standard_normal(x.shape, dtype=np.float32)
    tp = [None if p is None else torch.from_numpy(p) for p in params]
    ref, (rx,) = _torch_grads(lambda a: ada.filter_noise_cutout(a, *tp, backend="cpu"), (x,), g)
    jp = _put(device, *params)
    out, (gx,) = _jax_grads(lambda a: pj.ada_filter_noise_cutout(a, *jp), (x,), g, device)
    _close(out, ref, atol=1e-4, rtol=1e-4)
    _close(gx, rx, atol=1e-4, rtol=1e-4)


def test_ada_errors_name_the_argument():
    x = jnp.zeros((2, 3, 30, 30))
    with pytest.raises(ValueError, match="G_inv"):
        pj.ada_geometric_color(x, jnp.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="images"):
        pj.ada_geometric_color(jnp.zeros((2, 2, 30, 30)))
    with pytest.raises(ValueError, match="sigma and noise"):
        pj.ada_filter_noise_cutout(x, sigma=jnp.zeros(2))
    with pytest.raises(ValueError, match="filters"):
        pj.ada_filter_noise_cutout(x, filters=jnp.zeros((2, 42)))


def test_kernel_error_reaches_python():
    """A bad call that bypasses the Python checks gets the handler's message, not a crash."""
    bad = jax.ffi.ffi_call("pyops_point_sample", jax.ShapeDtypeStruct((2, 3, 5), jnp.float32))
    with pytest.raises(Exception, match="point_coords must have shape"):
        jax.block_until_ready(bad(jnp.zeros((2, 3, 4, 4)), jnp.zeros((3, 5, 2)), align_corners=np.bool_(False)))


def test_import_error_names_the_missing_binding(monkeypatch):
    """A pyops built without jax: `import pyops.jax` says how to get the binding."""
    monkeypatch.setitem(sys.modules, "pyops._jax_ffi", None)  # makes `from pyops import _jax_ffi` fail
    monkeypatch.delattr(pyops, "_jax_ffi")
    monkeypatch.delitem(sys.modules, "pyops.jax")
    with pytest.raises(ImportError, match="built without its JAX binding.*rebuild"):
        importlib.import_module("pyops.jax")


def test_readme_example_runs():
    """The README's JAX example runs as written (on the default JAX device)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"### JAX.*?```python\n(.*?)```", readme, re.S)
    assert block, "README.md has no ```python block under '### JAX'"
    scope: dict = {}
    exec(block.group(1), scope)
    assert scope["points"].shape == (2, 64, 196) and scope["out"].shape == (2, 4, 512, 64)
