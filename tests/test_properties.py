"""Property suite (issue #20): every public op and module against :mod:`pyops.reference` on
random small shapes (size-1 and empty dimensions included), non-contiguous and channels_last
layouts, every accepted dtype (float64 compared in float64), coordinates outside [0, 1], masks,
sharing modes, strides/dilations/groups and explicit ADA parameters.

Profiles (tests/conftest.py): ``ci`` (the default: derandomized, a few examples per property, the
C++ CPU backend, Triton under the interpreter on fewer) and ``long``
(``pytest tests/test_properties.py --hypothesis-profile=long``)."""

from __future__ import annotations

import functools

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyops  # noqa: E402
from pyops import reference as ref  # noqa: E402
from pyops.sac import random_parameters  # noqa: E402

TOL = {torch.float64: dict(atol=1e-9, rtol=1e-7), torch.float32: dict(atol=2e-5, rtol=2e-4)}
BACKENDS = ["cpu", "triton"]
DTYPES = st.sampled_from([torch.float32, torch.float64])


def backends(test):
    """Run ``test`` on the C++ CPU backend with the profile's examples, and on Triton (the
    interpreter, slow) with a third of them."""

    @pytest.mark.parametrize("backend", BACKENDS)
    @functools.wraps(test)
    def wrapper(backend, **kw):
        return test(backend=backend, **kw)

    return wrapper


def _examples(backend):
    n = settings().max_examples
    return n if backend == "cpu" else max(2, n // 3)


def run(backend, body, strategy):
    """Draw ``strategy`` examples (fewer for Triton) and check ``body(backend, example)``."""

    @settings(max_examples=_examples(backend), suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def inner(ex):
        body(backend, ex)

    inner()


def _tensor(shape, dtype, seed, *, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)


def _layout(t, how):
    """t in a layout: "contiguous", "channels_last" (4-D) or "strided" (a non-contiguous view)."""
    if how == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if how == "strided":
        return torch.cat([t, t], dim=-1)[..., ::2] if t.shape[-1] else t
    return t


def _check(got, want, dtype, leaves=(), grads=True):
    torch.testing.assert_close(got, want[0] if isinstance(want, tuple) else want, equal_nan=True, **TOL[dtype])
    if not grads or not got.requires_grad or got.numel() == 0:
        return
    g = _tensor(got.shape, got.dtype, 99)
    a = torch.autograd.grad(got, leaves, g, allow_unused=True)
    b = torch.autograd.grad(want, leaves, g, allow_unused=True)
    for i, (x, y) in enumerate(zip(a, b)):
        if y is None:
            assert x is None or not x.any(), i
        else:
            assert x is not None, i
            torch.testing.assert_close(x, y, msg=lambda m, i=i: f"grad {i}: {m}", **TOL[dtype])


def _dtype_ok(backend, dtype):
    return not (backend == "triton" and dtype == torch.float64)


# ---- point_sample --------------------------------------------------------------------------

POINT_SAMPLE = st.fixed_dictionaries(dict(
    N=st.integers(0, 3), C=st.integers(0, 4), H=st.integers(1, 7), W=st.integers(1, 7), P=st.integers(0, 9),
    grid=st.booleans(), align=st.booleans(), dtype=DTYPES, layout=st.sampled_from(["contiguous", "channels_last", "strided"]),
    seed=st.integers(0, 2**16)))


@backends
def test_point_sample(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        x = _layout(_tensor((e["N"], e["C"], e["H"], e["W"]), dt, e["seed"]), e["layout"]).requires_grad_()
        shape = (e["N"], e["P"], 2, 2) if e["grid"] else (e["N"], e["P"], 2)
        c = (_tensor(shape, dt, e["seed"] + 1, scale=0.6, offset=0.5)).requires_grad_()  # outside [0, 1] too
        got = pyops.point_sample(x, c, e["align"], backend=backend)
        _check(got, ref.point_sample(x, c, e["align"]), dt, (x, c))

    run(backend, body, POINT_SAMPLE)


# ---- Linformer -----------------------------------------------------------------------------

LINFORMER = st.fixed_dictionaries(dict(
    B=st.integers(0, 2), H=st.integers(1, 3), nq=st.integers(0, 5), n=st.integers(1, 6), extra=st.integers(0, 2),
    d=st.integers(1, 5), k=st.integers(1, 4), E=st.sampled_from(["shared", "per_head"]),
    F=st.sampled_from(["none", "shared", "per_head"]), one_kv=st.booleans(), mask=st.booleans(),
    scale=st.sampled_from([None, 0.3]), dtype=DTYPES, strided=st.booleans(), seed=st.integers(0, 2**16)))


@backends
def test_linformer_attention(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        B, H, n, d, k = e["B"], e["H"], e["n"], e["d"], e["k"]
        hk = 1 if e["one_kv"] else H
        q = _tensor((B, H, e["nq"], d), dt, e["seed"])
        kk = _tensor((B, hk, n, d), dt, e["seed"] + 1)
        v = _tensor((B, hk, n, d), dt, e["seed"] + 2)
        if e["strided"]:
            q, kk, v = (_layout(t, "strided") for t in (q, kk, v))
        nm = n + e["extra"]
        E = _tensor((H, nm, k) if e["E"] == "per_head" else (nm, k), dt, e["seed"] + 3, scale=0.5)
        F = None if e["F"] == "none" else _tensor((H, nm, k) if e["F"] == "per_head" else (nm, k), dt, e["seed"] + 4, scale=0.5)
        mask = (torch.rand(B, n, generator=torch.Generator().manual_seed(e["seed"])) < 0.3) if e["mask"] else None
        leaves = [t.requires_grad_() for t in (q, kk, v, E, F) if t is not None]
        got = pyops.linformer_attention(q, kk, v, E, F, key_padding_mask=mask, scale=e["scale"], backend=backend)
        want = ref.linformer_attention(q, kk, v, E, F, key_padding_mask=mask,
                                       scale=e["scale"] if e["scale"] is not None else d ** -0.5)
        _check(got, want, dt, leaves)
        got_p = pyops.linformer_project(kk, E, mask, backend=backend)
        _check(got_p, ref.linformer_project(kk, E, mask), dt, leaves[1:2] + leaves[3:4])

    run(backend, body, LINFORMER)


MODULE = st.fixed_dictionaries(dict(
    sharing=st.sampled_from(["headwise", "kv", "layerwise", "none"]), one_kv=st.booleans(), share_kv=st.booleans(),
    heads=st.integers(1, 3), dim_head=st.integers(1, 4), n=st.integers(1, 6), k=st.integers(1, 4),
    B=st.integers(1, 2), mask=st.booleans(), seed=st.integers(0, 2**16)))


def test_linformer_module():
    def body(_, e):
        torch.manual_seed(e["seed"])
        proj = pyops.shared_projection(6, e["k"]) if e["sharing"] == "layerwise" else None
        m = pyops.LinformerSelfAttention(8, 6, k=e["k"], heads=e["heads"], dim_head=e["dim_head"], share_kv=e["share_kv"],
                                         sharing=e["sharing"], one_kv_head=e["one_kv"], projection=proj, backend="cpu")
        x = _tensor((e["B"], e["n"], 8), torch.float32, e["seed"])
        mask = (torch.rand(e["B"], e["n"], generator=torch.Generator().manual_seed(e["seed"])) < 0.3) if e["mask"] else None
        got = m(x, mask)
        B, n = e["B"], e["n"]
        q = m.to_q(x).view(B, n, m.heads, m.dim_head).transpose(1, 2)
        kk = m.to_k(x).view(B, n, m.kv_heads, m.dim_head).transpose(1, 2)
        v = m.to_v(x).view(B, n, m.kv_heads, m.dim_head).transpose(1, 2)
        E = m.shared_E if e["sharing"] == "layerwise" else m.E
        out = ref.linformer_attention(q, kk, v, E, m.F, key_padding_mask=mask, scale=m.dim_head ** -0.5)
        want = m.to_out(out.transpose(1, 2).reshape(B, n, -1))
        _check(got, want, torch.float32, list(m.parameters()))

    run("cpu", body, MODULE)


# ---- SAC -----------------------------------------------------------------------------------

SAC = st.fixed_dictionaries(dict(
    N=st.integers(0, 2), Cg=st.integers(0, 3), Og=st.integers(0, 3), groups=st.integers(1, 3), k=st.sampled_from([1, 3]),
    H=st.integers(3, 9), W=st.integers(3, 9), stride=st.sampled_from([1, 2, (1, 2)]), dilation=st.sampled_from([1, 2]),
    bias=st.booleans(), dtype=DTYPES, channels_last=st.booleans(), algorithm=st.sampled_from(["composition", "igemm"]),
    seed=st.integers(0, 2**16)))


def _sac_inputs(e, dt):
    C, O, g, k = e["Cg"] * e["groups"], e["Og"] * e["groups"], e["groups"], e["k"]
    d = e["dilation"]
    p = random_parameters(C, O, k=k, groups=g, bias=e["bias"], dtype=dt, generator=torch.Generator().manual_seed(e["seed"]))
    x = _tensor((e["N"], C, e["H"], e["W"]), dt, e["seed"] + 1)
    if e["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, p, (e["stride"], d * (k - 1) // 2, d, g)


@backends
def test_sac_conv2d(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        x, p, geom = _sac_inputs(e, dt)
        leaves = [t.requires_grad_() for t in (x, *p) if t is not None]
        got = pyops.sac_conv2d(x, *p, *geom, backend=backend, algorithm=e["algorithm"])
        _check(got, ref.sac_conv2d(x, *p, *geom), dt, leaves)

    run(backend, body, SAC)


SAC_MODULE = st.fixed_dictionaries(dict(
    C=st.integers(1, 4), O=st.integers(1, 4), groups=st.sampled_from([1, 2]), k=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]), bias=st.booleans(), random=st.booleans(),
    load_plain=st.booleans(), N=st.integers(1, 2), H=st.integers(3, 8), seed=st.integers(0, 2**16)))


def test_sac_module():
    def body(_, e):
        g = e["groups"]
        C, O = e["C"] * g, e["O"] * g
        torch.manual_seed(e["seed"])
        pad = e["dilation"] * (e["k"] - 1) // 2
        m = pyops.SAConv2d(C, O, e["k"], stride=e["stride"], padding=pad, dilation=e["dilation"], groups=g,
                           bias=e["bias"], backend="cpu").double()
        if e["load_plain"]:  # a plain conv checkpoint: gamma/beta recovered from its weight
            conv = torch.nn.Conv2d(C, O, e["k"], stride=e["stride"], padding=pad, dilation=e["dilation"], groups=g,
                                   bias=e["bias"]).double()
            m.load_state_dict(conv.state_dict(), strict=False)
        if e["random"]:
            with torch.no_grad():
                for t in (m.switch.weight, m.weight_diff, m.pre_context.weight, m.post_context.weight):
                    t.copy_(0.3 * torch.randn_like(t))
        x = _tensor((e["N"], C, e["H"], e["H"] + 1), torch.float64, e["seed"])
        got = m(x)
        want = ref.sac_conv2d(x, m.weight, m.weight_gamma, m.weight_beta, m.weight_diff, m.switch.weight, m.switch.bias,
                              m.pre_context.weight, m.pre_context.bias, m.post_context.weight, m.post_context.bias,
                              m.bias, m.stride, m.padding, m.dilation, g)
        _check(got, want, torch.float64, list(m.parameters()))
        if e["load_plain"] and not e["random"]:
            torch.testing.assert_close(got, conv(x), **TOL[torch.float64])

    run("cpu", body, SAC_MODULE)


# ---- PointRend selection -----------------------------------------------------------------------

SUBDIV = st.fixed_dictionaries(dict(R=st.integers(0, 3), h=st.integers(1, 6), w=st.integers(1, 6), P=st.integers(1, 40),
                                    dtype=DTYPES, strided=st.booleans(), seed=st.integers(0, 2**16)))


@backends
def test_subdivision_step(backend):
    def body(backend, e):
        dt = e["dtype"]
        logits = _tensor((e["R"], e["h"], e["w"]), dt, e["seed"], scale=4)
        if e["strided"]:
            logits = _layout(logits, "strided")
        up, idx, coords = pyops.subdivision_step(logits, e["P"], backend=backend)
        up_r, idx_r, coords_r = ref.subdivision_step(logits, e["P"])
        _check(up, up_r, dt)
        # the chosen cells are the most uncertain ones: their uncertainties equal the reference's
        unc = -up_r.flatten(1).abs().float()
        torch.testing.assert_close(unc.gather(1, idx).sort(1).values, unc.gather(1, idx_r).sort(1).values)
        assert coords.shape == coords_r.shape

    run(backend, body, SUBDIV)


SELECT = st.fixed_dictionaries(dict(R=st.integers(0, 3), C=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
                                    P=st.integers(1, 12), over=st.sampled_from([1.0, 2.0, 3.0]),
                                    imp=st.sampled_from([0.0, 0.5, 0.75, 1.0]), dtype=DTYPES, seed=st.integers(0, 2**16)))


@backends
def test_uncertain_point_coords(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        R, C = e["R"], e["C"]
        logits = _tensor((R, C, e["h"], e["w"]), dt, e["seed"])
        ns = int(e["P"] * e["over"])
        cand = torch.rand(R, ns, 2, generator=torch.Generator().manual_seed(e["seed"])) * 1.2 - 0.1
        classes = torch.randint(0, C, (R,), generator=torch.Generator().manual_seed(e["seed"])) if C > 1 else None
        got = pyops.get_uncertain_point_coords_with_randomness(logits, None, e["P"], e["over"], e["imp"], classes=classes,
                                                               candidates=cand, backend=backend)
        func = functools.partial(ref.calculate_uncertainty, classes=classes)
        want = ref.get_uncertain_point_coords_with_randomness(logits, func, e["P"], e["over"], e["imp"], cand)
        nu = int(e["imp"] * e["P"])
        assert got.shape == want.shape == (R, e["P"], 2)
        # the uncertain points: the same set (ties aside, their uncertainties equal)
        u_got = func(ref.point_sample(logits, got[:, :nu].to(dt))) if nu else None
        u_want = func(ref.point_sample(logits, want[:, :nu].to(dt))) if nu else None
        if nu:
            torch.testing.assert_close(u_got.sort(-1).values, u_want.sort(-1).values, atol=1e-5, rtol=1e-4)
        assert ((got[:, nu:] >= 0) & (got[:, nu:] <= 1)).all()

    run(backend, body, SELECT)


# ---- ADA -----------------------------------------------------------------------------------

ADA = st.fixed_dictionaries(dict(B=st.integers(0, 3), ch=st.sampled_from([1, 3]), H=st.integers(1, 9), W=st.integers(1, 9),
                                 geom=st.booleans(), color=st.booleans(), dtype=DTYPES, strided=st.booleans(),
                                 angle=st.floats(-3.2, 3.2), scale=st.floats(0.5, 2.0), tx=st.floats(-0.5, 0.5),
                                 seed=st.integers(0, 2**16)))


@backends
def test_geometric_color(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        B = e["B"]
        x = _tensor((B, e["ch"], e["H"], e["W"]), dt, e["seed"])
        if e["strided"]:
            x = _layout(x, "strided")
        x.requires_grad_()
        G = None
        if e["geom"]:
            th = torch.full((B,), e["angle"], dtype=torch.float64)
            G = pyops.ada.rotate2d(th) @ pyops.ada.scale2d(torch.full((B,), e["scale"], dtype=torch.float64), torch.ones(B, dtype=torch.float64))
            G = (pyops.ada.translate2d(torch.full((B,), e["tx"] * e["W"], dtype=torch.float64), torch.zeros(B, dtype=torch.float64)) @ G).to(dt)
        C = None
        if e["color"]:
            C = torch.eye(4, dtype=dt).repeat(B, 1, 1) + 0.2 * _tensor((B, 4, 4), dt, e["seed"] + 1)
            C[:, 3] = torch.tensor([0, 0, 0, 1.0], dtype=dt)
        got = pyops.ada.geometric_color(x, G, C, backend=backend)
        want = x
        if G is not None:
            want = ref.ada.geometric(want, G)
        if C is not None:
            want = ref.ada.color(want, C)
        tol = dt if backend == "cpu" else torch.float32
        _check(got, want, tol, (x,))

    run(backend, body, ADA)


FILTER = st.fixed_dictionaries(dict(B=st.integers(0, 2), ch=st.sampled_from([1, 3]), H=st.integers(22, 26), W=st.integers(22, 26),
                                    filt=st.booleans(), noise=st.booleans(), cut=st.booleans(), dtype=DTYPES,
                                    seed=st.integers(0, 2**16)))


@backends
def test_filter_noise_cutout(backend):
    def body(backend, e):
        dt = e["dtype"] if _dtype_ok(backend, e["dtype"]) else torch.float32
        B = e["B"]
        x = _tensor((B, e["ch"], e["H"], e["W"]), dt, e["seed"]).requires_grad_()
        gains = (torch.rand(B, 4, generator=torch.Generator().manual_seed(e["seed"])) + 0.5) if e["filt"] else None
        sigma = torch.rand(B, generator=torch.Generator().manual_seed(e["seed"])) if e["noise"] else None
        noise = _tensor(x.shape, torch.float32, e["seed"] + 2) if e["noise"] else None
        boxes = (torch.rand(B, 4, generator=torch.Generator().manual_seed(e["seed"] + 3)) * 1.4 - 0.2) if e["cut"] else None
        got = pyops.ada.augment(x, filter_gains=gains, noise_sigma=sigma, noise=noise, cutout_boxes=boxes, backend=backend)
        want = x
        if gains is not None:
            want = ref.ada.filter_taps(want, gains.to(ref.ada._opmath(x)) @ ref.ada.filter_bank(ref.ada._opmath(x)))
        if sigma is not None:
            want = ref.ada.add_noise(want, sigma, noise)
        if boxes is not None:
            want = ref.ada.cutout(want, boxes)
        _check(got, want, dt if backend == "cpu" else torch.float32, (x,))

    run(backend, body, FILTER)


PIPE = st.fixed_dictionaries(dict(preset=st.sampled_from(["blit", "geom", "color", "bgc", "bgcfnc"]), p=st.floats(0, 1),
                                  B=st.integers(1, 3), ch=st.sampled_from([1, 3]), H=st.integers(22, 26), seed=st.integers(0, 2**16)))


def test_augment_pipe():
    """The pipe equals the reference chain on the parameters it draws (same generator state)."""
    def body(_, e):
        pipe = pyops.AugmentPipe.from_preset(e["preset"], p=e["p"], backend="cpu")
        x = torch.rand(e["B"], e["ch"], e["H"], e["H"] + 1, generator=torch.Generator().manual_seed(e["seed"])) * 2 - 1
        torch.manual_seed(e["seed"])
        got = pipe(x)
        torch.manual_seed(e["seed"])
        params = pipe.sample_params(x)
        want = pyops.ada.augment(x, **params, backend="reference")
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-4)

    run("cpu", body, PIPE)
