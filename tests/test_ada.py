"""StyleGAN2-ADA augmentation: every kernel against the reference chain for explicit parameters,
the parameter distributions of AugmentPipe, gradients of any order, the adaptive controller."""

import math
import socket

import pytest
import torch
from helpers import (
    HAS_CUDA,
    HAS_TRITON,
    TOLERANCES,
    assert_compile_matches_eager,
    assert_gradcheck,
    assert_matches_reference,
    assert_opcheck,
    ops_for,
    requires_cuda,
)

import pyops
from pyops import ada
from pyops._backend import triton_interpreted
from pyops.reference import ada as ref

# The fused geometric + colour op on every backend. The Triton interpreter is slow (it pays per
# operation): the cpu-triton cases use tiny images and are left out of the heaviest tests, which run
# Triton on the GPU only.
CPU_TRITON = HAS_TRITON and not HAS_CUDA and triton_interpreted()


def backends(cpu_triton=True):
    params = [pytest.param("cpu", "cpu", id="cpu-cpu")]
    if cpu_triton and CPU_TRITON:
        params.append(pytest.param("cpu", "triton", id="cpu-triton"))
    for backend in ("cuda", "triton"):
        params.append(pytest.param("cuda", backend, id=f"cuda-{backend}", marks=[pytest.mark.gpu, requires_cuda]))
    return params


DEVICE_BACKENDS = backends()
HEAVY_BACKENDS = backends(cpu_triton=False)
CPP_BACKENDS = [p for p in HEAVY_BACKENDS if "triton" not in p.id]


def interpreted(device, backend):
    return device == "cpu" and backend == "triton"


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _own_rng():
    # these tests seed and draw from the global generator: restore it afterwards, so the tests
    # of other families see the same random numbers whether or not these ran first
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        yield


def make_images(B, C, H, W, dtype=torch.float32, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(B, C, H, W, generator=gen, dtype=torch.float64) * 2 - 1).to(device=device, dtype=dtype)


def make_G(B, seed=1, dtype=torch.float64, device="cpu"):
    """Rotation, anisotropic scale and fractional translation: a general affine G_inv."""
    gen = torch.Generator().manual_seed(seed)
    theta = (torch.rand(B, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    s = torch.exp2(torch.randn(B, 2, generator=gen, dtype=torch.float64) * 0.2)
    t = torch.randn(B, 2, generator=gen, dtype=torch.float64) * 1.5
    G = ada.translate2d(t[:, 0], t[:, 1]) @ ada.rotate2d(theta) @ ada.scale2d(s[:, 0], s[:, 1])
    return G.to(device=device, dtype=dtype)


def make_C(B, seed=2, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    C = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1) + 0.3 * torch.randn(B, 4, 4, generator=gen, dtype=torch.float64)
    C[:, 3] = torch.tensor([0, 0, 0, 1.0], dtype=torch.float64)
    return C.to(device=device, dtype=dtype)


def fused(backend):
    return lambda x, G, C: pyops.ada.geometric_color(x, G, C, backend=backend)


def chain(x, G, C):
    y = x if G is None else ref.geometric(x, G)
    return y if C is None else ref.color(y, C)


def tol_for(dtype):
    # the chain sums about 10^4 terms per pixel; half precision only rounds input and output
    return {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-8)}.get(dtype, TOLERANCES[dtype])


# ---- the fused geometric + colour op against the chain -------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
@pytest.mark.parametrize("stages", ["geom", "color", "both"])
def test_geom_color_matches_reference(device, backend, channels, stages):
    dtypes, shape = DTYPES, (2, channels, 9, 11)
    if backend == "triton":  # the Triton kernels compute in float32, like for half inputs
        dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if device == "cuda" else [])
    if interpreted(device, backend):
        dtypes, shape = dtypes if stages == "both" else dtypes[:1], (1, channels, 4, 5)
    for dtype in dtypes:
        x = make_images(*shape, dtype, device)
        G = make_G(shape[0], device=device) if stages != "color" else None
        C = make_C(shape[0], device=device) if stages != "geom" else None
        # the reference runs in float64 on the rounded inputs; the op computes in float32
        want_fn = lambda x, G=G, C=C: chain(x.double(), G, C).to(x.dtype)  # noqa: E731
        assert_matches_reference(lambda x: fused(backend)(x, G, C), want_fn, (x,), tol=tol_for(dtype))


@pytest.mark.parametrize("device,backend", HEAVY_BACKENDS)
def test_strong_zoom_and_odd_sizes(device, backend):
    # zoom out (margin clamped to the image, zeros beyond), zoom in, a 1-pixel-wide image
    dtype = torch.float32 if backend == "triton" else torch.float64
    for shape, sx in [((2, 3, 7, 13), 3.5), ((2, 3, 10, 6), 0.3), ((1, 1, 5, 1), 1.2)]:
        x = make_images(*shape, dtype=dtype, device=device)
        s = torch.full((shape[0],), sx, dtype=torch.float64)
        G = (make_G(shape[0]) @ ada.scale2d(s, s)).to(device=device, dtype=dtype)
        assert_matches_reference(
            lambda x: fused(backend)(x, G, None), lambda x: chain(x.double(), G.double(), None).to(dtype), (x,), tol=tol_for(dtype)
        )


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_non_contiguous_and_empty(device, backend):
    base = make_images(2, 3, 4, 3, torch.float32, device) if interpreted(device, backend) else make_images(2, 3, 12, 10, torch.float32, device)
    x = base.transpose(2, 3)[:, :, 1:, :]  # strided, offset
    G, C = make_G(2, device=device, dtype=torch.float32), make_C(2, device=device, dtype=torch.float32)
    assert not x.is_contiguous()
    assert_matches_reference(lambda x: fused(backend)(x, G, C), lambda x: chain(x.double(), G, C).float(), (x,), tol=tol_for(torch.float32))
    cl = base.to(memory_format=torch.channels_last)
    assert_matches_reference(lambda x: fused(backend)(x, G, C), lambda x: chain(x.double(), G, C).float(), (cl,), tol=tol_for(torch.float32))
    empty = make_images(0, 3, 5, 5, torch.float32, device)
    assert fused(backend)(empty, G[:0], C[:0]).shape == (0, 3, 5, 5)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_identity_returns_input(device, backend):
    B = 1 if interpreted(device, backend) else 3
    x = make_images(B, 3, 4, 5, torch.float32, device) if B == 1 else make_images(B, 3, 10, 12, torch.float32, device)
    G = torch.eye(3, device=device).repeat(B, 1, 1)
    C = torch.eye(4, device=device).repeat(B, 1, 1)
    torch.testing.assert_close(fused(backend)(x, G, C), x, atol=1e-5, rtol=1e-5)
    out = pyops.ada.augment(
        x, G_inv=G, C=C, noise_sigma=torch.zeros(B, device=device), cutout_boxes=torch.zeros(B, 4, device=device), backend=backend
    )
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    big = make_images(2, 1, 24, 23, torch.float32, device)
    torch.testing.assert_close(pyops.ada.augment(big, filter_gains=torch.ones(2, 4, device=device)), big, atol=1e-5, rtol=1e-5)


# ---- the fused filter + noise + cutout op against the chain ------------------------------------


def make_filter_params(B, C, H, W, seed=5, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    gains = torch.exp2(torch.randn(B, 4, generator=gen, dtype=torch.float64))
    filters = gains @ ref.filter_bank()
    sigma = torch.rand(B, generator=gen, dtype=torch.float64) * 0.2
    noise = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    boxes = torch.cat([torch.rand(B, 2, generator=gen, dtype=torch.float64), torch.full((B, 2), 0.5, dtype=torch.float64)], 1)
    return [t.to(device=device, dtype=dtype) for t in (filters, sigma, noise, boxes)]


def filter_chain(x, filters, sigma, noise, boxes):
    y = x if filters is None else ref.filter_taps(x, filters)
    y = y if sigma is None else ref.add_noise(y, sigma, noise)
    return y if boxes is None else ref.cutout(y, boxes)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_filter_noise_cutout_matches_reference(device, backend, channels):
    shape = (1, channels, 22, 23) if interpreted(device, backend) else (2, channels, 25, 23)
    dtypes = [torch.float32, torch.float16] if backend == "triton" else DTYPES
    params = make_filter_params(*shape, device=device)
    for dtype in dtypes:
        x = make_images(*shape, dtype, device)
        fused_fn = lambda x: pyops.ada.filter_noise_cutout(x, *params, backend=backend)  # noqa: E731
        want_fn = lambda x: filter_chain(x.double(), *params).to(x.dtype)  # noqa: E731
        assert_matches_reference(fused_fn, want_fn, (x,), tol=tol_for(dtype))
    if not interpreted(device, backend):  # each stage alone
        x = make_images(*shape, torch.float32, device)
        f, s, n, b = params
        for args in [(f, None, None, None), (None, s, n, None), (None, None, None, b)]:
            assert_matches_reference(
                lambda x: pyops.ada.filter_noise_cutout(x, *args, backend=backend),
                lambda x: filter_chain(x.double(), *args).float(),
                (x,),
                tol=tol_for(torch.float32),
            )


@pytest.mark.parametrize("device,backend", CPP_BACKENDS)
def test_filter_gradcheck_and_gradgradcheck(device, backend):
    x = make_images(1, 1, 22, 22, torch.float64, device)
    f, s, n, b = make_filter_params(1, 1, 22, 22, device=device)
    assert_gradcheck(lambda x: pyops.ada.filter_noise_cutout(x, f, s, n, b, backend=backend), (x,), gradgrad=True)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_filter_opcheck(device, backend):
    shape = (1, 1, 22, 22) if interpreted(device, backend) else (2, 3, 22, 24)
    x = make_images(*shape, torch.float32, device).requires_grad_()
    f, s, n, b = make_filter_params(*shape, dtype=torch.float32, device=device)
    forward = ops_for(backend).ada_filter_noise_cutout
    adjoint = ops_for(backend).ada_filter_noise_cutout_backward
    if interpreted(device, backend):  # the registrations are the same; the interpreter is slow
        assert_opcheck(forward, (x, None, s, n, b))
        assert_opcheck(adjoint, (x, None, b))
        return
    assert_opcheck(forward, (x, f, s, n, b))
    assert_opcheck(adjoint, (x, f, b))


def test_filter_bad_arguments():
    x = torch.zeros(2, 3, 24, 24)
    with pytest.raises(ValueError, match=r"filters must have shape \(B, 43\)"):
        pyops.ada.filter_noise_cutout(x, torch.zeros(2, 40))
    with pytest.raises(ValueError, match="sigma and noise must be given together"):
        pyops.ada.filter_noise_cutout(x, None, torch.zeros(2))
    with pytest.raises(RuntimeError, match="filtering needs H and W of at least 22"):
        torch.ops.pyops.ada_filter_noise_cutout(torch.zeros(1, 1, 8, 30), torch.zeros(1, 43), None, None, None)
    with pytest.raises(RuntimeError, match="noise must have the images' shape"):
        torch.ops.pyops.ada_filter_noise_cutout(x, None, torch.zeros(2), torch.zeros(2, 3, 24, 23), None)


# ---- every augmentation alone, and all together, through the pipeline's parameters ------------


SINGLE = ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
          "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout"]


def _pipe_params(pipe, x, seed):
    torch.manual_seed(seed)
    return pipe.sample_params(x)


@pytest.mark.parametrize("device,backend", HEAVY_BACKENDS)
@pytest.mark.parametrize("name", SINGLE)
def test_each_augmentation_matches_reference(device, backend, name):
    pipe = pyops.AugmentPipe(**{name: 1.0}, p=1.0)
    x = make_images(6, 3, 24, 22, torch.float64, device)
    params = _pipe_params(pipe, x, seed=7)
    params = {k: v.double() for k, v in params.items()}
    dtype = torch.float32 if backend == "triton" else torch.float64
    got = pyops.ada.augment(x.to(dtype), **params, backend=backend)
    want = ref.augment(x, **params).to(dtype)
    torch.testing.assert_close(got, want, **tol_for(dtype))
    assert not torch.allclose(got, x.to(dtype))  # the augmentation did something at p = 1


@pytest.mark.parametrize("device,backend", HEAVY_BACKENDS)
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_all_together_matches_reference(device, backend, channels):
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.8)
    x = make_images(3, channels, 24, 26, torch.float32, device)
    params = _pipe_params(pipe, x, seed=4)
    assert set(params) == {"G_inv", "C", "filter_gains", "noise_sigma", "noise", "cutout_boxes"}
    assert_matches_reference(
        lambda x: pyops.ada.augment(x, **params, backend=backend),
        lambda x: ref.augment(x.double(), **{k: v.double() for k, v in params.items()}).float(),
        (x,),
        tol=dict(atol=5e-5, rtol=1e-4),
    )
    # the module draws the same parameters under the same seed
    torch.manual_seed(4)
    pipe.backend = backend
    torch.testing.assert_close(pipe(x), pyops.ada.augment(x, **params, backend=backend))


def test_reference_backend_and_p_zero():
    x = make_images(2, 3, 24, 24)
    pipe = pyops.AugmentPipe.from_preset("bgc", backend="reference")
    pipe.p.fill_(0.5)
    torch.manual_seed(0)
    a = pipe(x)
    pipe.backend = "cpu"
    torch.manual_seed(0)
    torch.testing.assert_close(pipe(x), a, atol=2e-5, rtol=1e-4)
    # p = 0: every sample gets identity parameters, so the chain returns the input
    pipe.p.zero_()
    torch.testing.assert_close(pipe(x), x, atol=1e-5, rtol=1e-5)


# ---- statistics of the drawn parameters -----------------------------------------------------------


def _fraction(mask):
    return mask.float().mean().item()


def _close(observed, expected, n):
    # 5 standard deviations of a binomial proportion
    return abs(observed - expected) <= 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / n) + 1e-9


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_parameter_statistics(p):
    n = 20000
    x = torch.zeros(n, 3, 8, 8)
    torch.manual_seed(0)

    def draw(**kw):
        return pyops.AugmentPipe(p=p, **kw).sample_params(x)

    G = draw(xflip=1)["G_inv"]
    assert _close(_fraction(G[:, 0, 0] < 0), p / 2, n)
    G = draw(rotate90=1)["G_inv"]
    assert _close(_fraction(G[:, 0, 0].abs() < 0.5), p / 2, n)  # 90 or 270 degrees
    assert _close(_fraction(G[:, 0, 0] < -0.5), p / 4, n)  # 180 degrees
    G = draw(xint=1, xint_max=0.125)["G_inv"]
    tx = G[:, 0, 2]
    assert torch.equal(tx, tx.round()) and tx.abs().max() <= 1
    G = draw(scale=1)["G_inv"]
    log_s = -torch.log2(G[:, 0, 0])
    fired = log_s != 0
    assert _close(_fraction(fired), p, n)
    if p > 0:
        assert abs(log_s[fired].std().item() - 0.2) < 0.01 and abs(log_s[fired].mean().item()) < 0.01
    G = draw(rotate=1)["G_inv"]
    assert _close(_fraction(G[:, 0, 1].abs() > 1e-7), p, n)  # P(pre or post rotation) = p
    G = draw(aniso=1)["G_inv"]
    assert torch.allclose(G[:, 0, 0] * G[:, 1, 1], torch.ones(n))
    assert _close(_fraction(G[:, 0, 0] != 1), p, n)
    G = draw(xfrac=1)["G_inv"]
    fired = G[:, 0, 2] != 0
    assert _close(_fraction(fired), p, n)
    if p > 0:
        assert abs((G[fired, 0, 2] / 8).std().item() - 0.125) < 0.006

    C = draw(brightness=1)["C"]
    b = C[:, 0, 3]
    assert _close(_fraction(b != 0), p, n)
    if p > 0:
        assert abs(b[b != 0].std().item() - 0.2) < 0.01
    C = draw(contrast=1)["C"]
    assert _close(_fraction(C[:, 0, 0] != 1), p, n)
    C = draw(lumaflip=1)["C"]
    assert _close(_fraction((C[:, 0, 0] - 1).abs() > 1e-6), p / 2, n)
    C = draw(hue=1)["C"]
    assert _close(_fraction(C[:, 0, 1] != 0), p, n)  # exactly 0 only without a rotation
    assert torch.allclose(C[:, :3, :3] @ C[:, :3, :3].transpose(1, 2), torch.eye(3).expand(n, 3, 3), atol=1e-5)
    C = draw(saturation=1)["C"]
    assert _close(_fraction((C[:, 0, 0] - 1).abs() > 1e-6), p, n)

    g = draw(imgfilter=1)["filter_gains"]
    assert (g > 0).all() and g.shape == (n, 4)
    assert _close(_fraction((g - 1).abs().amax(1) > 1e-6), 1 - (1 - p) ** 4, n)
    params = draw(noise=1)
    sigma = params["noise_sigma"]
    assert _close(_fraction(sigma > 0), p, n) and params["noise"].shape == (n, 3, 8, 8)
    if p > 0:
        assert abs(sigma[sigma > 0].mean().item() - 0.1 * math.sqrt(2 / math.pi)) < 0.003
    boxes = draw(cutout=1)["cutout_boxes"]
    assert _close(_fraction(boxes[:, 2] > 0), p, n) and torch.equal(boxes[:, 2], boxes[:, 3])
    assert boxes[:, :2].min() >= 0 and boxes[:, :2].max() <= 1
    assert set(boxes[:, 2].unique().tolist()) <= {0.0, 0.5}


def test_parameters_stay_float32_under_autocast():
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.8)
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    torch.manual_seed(3)
    want = pipe.sample_params(x)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pipe.sample_params(x)
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == torch.float32, key
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_debug_percentile_pins_every_augmentation():
    # NVIDIA's debug_percentile: every enabled augmentation applied to every sample, at the percentile u
    x = make_images(5, 3, 16, 16)
    u = 0.7
    std_normal_u = torch.erfinv(torch.tensor(2 * u - 1)).item()
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.0)  # p = 0: nothing would fire without debugging
    params = pipe.sample_params(x, debug_percentile=u)
    for key, value in params.items():
        if key != "noise":
            torch.testing.assert_close(value, value[:1].expand_as(value), rtol=0, atol=0, msg=key)
    assert not torch.equal(params["G_inv"][0], torch.eye(3)) and not torch.equal(params["C"][0], torch.eye(4))
    torch.testing.assert_close(params["noise_sigma"], torch.full((5,), torch.erfinv(torch.tensor(u)).item() * pipe.noise_std))
    torch.testing.assert_close(params["cutout_boxes"][0], torch.tensor([u, u, pipe.cutout_size, pipe.cutout_size]))

    flip = pyops.AugmentPipe(xflip=1, p=0.0).sample_params(x, debug_percentile=u)["G_inv"]
    torch.testing.assert_close(flip, torch.diag(torch.tensor([-1.0, 1, 1])).expand(5, 3, 3))  # floor(2u) = 1
    rot = pyops.AugmentPipe(rotate90=1, p=0.0).sample_params(x, debug_percentile=0.3)["G_inv"]  # floor(4u) = 1
    torch.testing.assert_close(rot[0, :2, :2].abs(), torch.tensor([[0.0, 1], [1, 0]]), atol=1e-6, rtol=0)
    bright = pyops.AugmentPipe(brightness=1, p=0.0).sample_params(x, debug_percentile=u)["C"]
    torch.testing.assert_close(bright[:, :3, 3], torch.full((5, 3), std_normal_u * pipe.brightness_std))

    geom = pyops.AugmentPipe.from_preset("bgc", p=0.0)
    torch.testing.assert_close(geom(x, debug_percentile=u), pyops.ada.augment(x, **geom.sample_params(x, debug_percentile=u)))
    with pytest.raises(ValueError, match="pyops.AugmentPipe: debug_percentile must be"):
        geom(x, debug_percentile=1.5)


def test_presets_and_arguments():
    pipe = pyops.AugmentPipe.from_preset("bgc")
    assert pipe.xflip == pipe.rotate90 == pipe.scale == pipe.saturation == 1 and pipe.imgfilter == 0
    assert float(pipe.p) == 1 and "p" in dict(pipe.named_buffers())  # NVIDIA's default
    assert pyops.AugmentPipe.from_preset("bgcfnc").cutout == 1
    assert pyops.AugmentPipe.from_preset("bgc", xflip=0.5).xflip == 0.5
    with pytest.raises(ValueError, match="unknown preset 'bgz'"):
        pyops.AugmentPipe.from_preset("bgz")
    with pytest.raises(TypeError, match="unknown argument"):
        pyops.AugmentPipe(flip=1)
    with pytest.raises(ValueError, match="imgfilter_bands must be 4 numbers"):
        pyops.AugmentPipe(imgfilter_bands=[1, 1])


# ---- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", CPP_BACKENDS)  # Triton computes in float32
@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_gradcheck_and_gradgradcheck(device, backend, channels):
    x = make_images(1, channels, 5, 6, torch.float64, device)
    G, C = make_G(1, device=device), make_C(1, device=device)
    assert_gradcheck(lambda x: fused(backend)(x, G, C), (x,), gradgrad=True)
    assert_gradcheck(lambda x: fused(backend)(x, None, C), (x,), gradgrad=True)


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_backward_is_deterministic(device, backend):
    shape = (1, 1, 3, 3) if interpreted(device, backend) else (2, 3, 11, 9)
    x = make_images(*shape, torch.float32, device).requires_grad_()
    G, C = make_G(shape[0], device=device, dtype=torch.float32), make_C(shape[0], device=device, dtype=torch.float32)
    g = torch.randn(shape, device=device)
    torch.use_deterministic_algorithms(True)
    try:
        grads = [torch.autograd.grad(fused(backend)(x, G, C), x, g)[0] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(grads[0], other) for other in grads[1:])


@pytest.mark.parametrize("device,backend", HEAVY_BACKENDS)
def test_r1_through_the_pipeline(device, backend):
    torch.manual_seed(0)
    D = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Softplus(), torch.nn.Conv2d(4, 1, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1)
    ).to(device).double()
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.7, backend=backend)
    dtype = torch.float32 if backend == "triton" else torch.float64
    D = D.to(dtype)
    x = make_images(2, 3, 24, 24, dtype, device).requires_grad_()
    D(x)  # materialise the lazy layer

    def r1(seed):
        D.zero_grad()
        torch.manual_seed(seed)
        logits = D(pipe(x))
        (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = g.square().sum()
        penalty.backward()
        # every weight gets a gradient (a bias does not: it drops out of dD/dx)
        return penalty.detach(), [p.grad.clone() for p in D.parameters() if p.grad is not None]

    penalty, grads = r1(5)
    assert torch.isfinite(penalty) and penalty > 0
    assert len(grads) == 4 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    penalty2, grads2 = r1(5)
    assert torch.equal(penalty, penalty2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))


# ---- op registration -----------------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_opcheck(device, backend):
    shape = (1, 3, 3, 2) if interpreted(device, backend) else (2, 3, 6, 5)
    x = make_images(*shape, torch.float32, device).requires_grad_()
    G, C = make_G(shape[0], device=device, dtype=torch.float32), make_C(shape[0], device=device, dtype=torch.float32)
    forward, adjoint = ops_for(backend).ada_geom_color, ops_for(backend).ada_geom_color_backward
    assert_opcheck(forward, (x, None, C))
    assert_opcheck(adjoint, (x, None, C))
    if not interpreted(device, backend):  # the registrations are the same; the interpreter is slow
        assert_opcheck(forward, (x, G, C))
        assert_opcheck(adjoint, (x, G, C))
        assert_opcheck(forward, (x, G, None))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_compile_fullgraph(device, backend):
    shape = (1, 3, 3, 4) if interpreted(device, backend) else (2, 3, 7, 8)
    x = make_images(*shape, torch.float32, device)
    G, C = make_G(shape[0], device=device, dtype=torch.float32), make_C(shape[0], device=device, dtype=torch.float32)
    assert_compile_matches_eager(lambda x: pyops.ada.geometric_color(x, G, C, backend=backend).sin(), (x,))


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [2, 4])
def test_other_channel_counts_rejected(channels):
    x = torch.zeros(2, channels, 8, 8)
    with pytest.raises(ValueError, match=f"1 or 3 channels.*got {channels}"):
        pyops.ada.geometric_color(x, torch.eye(3).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        pyops.AugmentPipe.from_preset("bgc")(x)
    with pytest.raises(RuntimeError, match="1 or 3 channels"):
        torch.ops.pyops.ada_geom_color(x, None, torch.eye(4).repeat(2, 1, 1))


def test_bad_arguments():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"G_inv must have shape \(B, 3, 3\) = \(2, 3, 3\), got \(2, 2, 3\)"):
        pyops.ada.geometric_color(x, torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match=r"C must have shape \(B, 4, 4\)"):
        pyops.ada.geometric_color(x, None, torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="images must be a floating-point"):
        pyops.ada.geometric_color(x.long(), None, None)
    with pytest.raises(ValueError, match="4-D"):
        pyops.ada.geometric_color(x[0], None, None)
    with pytest.raises(ValueError, match="is on meta but images is on cpu"):
        pyops.ada.geometric_color(x, torch.zeros(2, 3, 3, device="meta"))
    with pytest.raises(ValueError, match="filtering needs H and W of at least 22"):
        pyops.ada.augment(x, filter_gains=torch.ones(2, 4))
    with pytest.raises(RuntimeError, match=r"C must have shape \(B, 4, 4\)"):
        torch.ops.pyops_triton.ada_geom_color(x, None, torch.zeros(2, 3, 3))
    with pytest.raises(RuntimeError, match=r"G_inv must have shape \(B, 3, 3\)"):
        torch.ops.pyops.ada_geom_color(x, torch.zeros(2, 3, 4), None)


# ---- controller -------------------------------------------------------------------------------------


def test_controller_steps():
    pipe = pyops.AugmentPipe.from_preset("bgc", p=0)
    ctl = pyops.AdaController(pipe, target=0.6, interval=4, kimg=500)
    for _ in range(3):
        ctl.update(torch.ones(8))  # r_t = 1 > target
    assert float(pipe.p) == 0  # no adjustment before the interval is complete
    ctl.update(torch.ones(8))
    assert float(pipe.p) == pytest.approx(32 / 500_000)
    assert float(ctl.r_t) == 1
    for _ in range(4):
        ctl.update(-torch.ones(8))  # r_t = -1 < target: back down, clamped at 0
    assert float(pipe.p) == 0
    for _ in range(8):
        ctl.update(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5
    assert float(pipe.p) == 0 and float(ctl.r_t) == pytest.approx(0.5)
    pipe.p = torch.tensor(0.25)  # a new buffer (as module.to(device) makes): still the one adjusted
    for _ in range(4):
        ctl.update(torch.ones(8))
    assert float(pipe.p) == pytest.approx(0.25 + 32 / 500_000)
    own = pyops.AdaController(interval=1, kimg=0.001)
    own.update(torch.ones(2))
    assert float(own.p) == pytest.approx(2.0)


def test_controller_state_dict_resumes_a_run():
    def run(steps, ctl):
        gen = torch.Generator().manual_seed(5)
        for _ in range(steps):
            ctl.update(torch.randn(8, generator=gen) + 1.5)

    whole = pyops.AdaController(pyops.AugmentPipe.from_preset("bgc", p=0), interval=3, kimg=0.01)
    run(7, whole)
    first = pyops.AdaController(pyops.AugmentPipe.from_preset("bgc", p=0), interval=3, kimg=0.01)
    gen = torch.Generator().manual_seed(5)
    for _ in range(5):  # stop mid-interval
        first.update(torch.randn(8, generator=gen) + 1.5)
    saved = first.state_dict()
    resumed = pyops.AdaController(pyops.AugmentPipe.from_preset("bgc", p=0), interval=3, kimg=0.01)
    resumed.load_state_dict(saved)
    for _ in range(2):
        resumed.update(torch.randn(8, generator=gen) + 1.5)
    assert float(whole.p) > 0
    assert float(resumed.p) == float(whole.p) and float(resumed.r_t) == float(whole.r_t)
    with pytest.raises(ValueError, match="pyops.AdaController.load_state_dict: state must be a dict with keys"):
        resumed.load_state_dict({"p": 0.1})


def test_pipe_loads_an_nvidia_state_dict_strictly():
    from pyops import reference

    nvidia = {"p": torch.tensor(0.3), "Hz_geom": reference.ada.geom_filter(torch.float32),
              "Hz_fbank": reference.ada.filter_bank(torch.float32)}
    pipe = pyops.AugmentPipe.from_preset("bgc")
    pipe.load_state_dict(nvidia)  # strict
    assert float(pipe.p) == pytest.approx(0.3)
    bad = dict(nvidia, Hz_geom=reference.ada.geom_filter(torch.float32).flip(0))
    with pytest.raises(RuntimeError, match="Hz_geom in the checkpoint is not the filter"):
        pipe.load_state_dict(bad)


def test_rv_heuristic():
    rv = pyops.rv_heuristic(torch.tensor([2.0, 2.0]), torch.tensor([1.0]), torch.tensor([-2.0, 0.0]))
    assert float(rv) == pytest.approx((2 - 1) / (2 - (-1)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank, port, results):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        pipe = pyops.AugmentPipe.from_preset("bgc", p=0.1)
        ctl = pyops.AdaController(pipe, interval=2, kimg=1)
        # rank 0 sees only positive signs, rank 1 only negative ones: globally r_t = 0 < 0.6
        logits = torch.ones(4) if rank == 0 else -torch.ones(4)
        ctl.update(logits)
        ctl.update(logits)
        results[rank] = (float(pipe.p), float(ctl.r_t))
    finally:
        torch.distributed.destroy_process_group()


def test_controller_two_process_gloo():
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(_gloo_worker, args=(_free_port(), results), nprocs=2, start_method="spawn")
        results = dict(results)
    # 2 ranks x 2 steps x 4 images = 16 images: p moves down by 16 / 1000
    for rank in (0, 1):
        p, r_t = results[rank]
        assert r_t == 0
        assert p == pytest.approx(0.1 - 16 / 1000)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pipe_half_precision_images(dtype):
    # any float dtype in, computed in float32, returned in the input dtype
    pipe = pyops.AugmentPipe.from_preset("bgcfnc", p=0.8)
    x = make_images(2, 3, 24, 24)
    torch.manual_seed(1)
    want = pipe(x.to(dtype).float())
    torch.manual_seed(1)
    got = pipe(x.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, **TOLERANCES[dtype])
