"""Linformer: every backend against the reference (projection + softmax attention), forward and
the gradients of q, k, v, E and F; masks, n < n_max, dropout, odd sizes, gradcheck, opcheck,
torch.compile, bad inputs, and the nn.Module."""

import math

import pytest
import torch
from helpers import (
    HAS_CUDA,
    assert_compile_matches_eager,
    assert_gradcheck,
    assert_matches_reference,
    assert_opcheck,
    device_backends,
    dtypes_for,
    ops_for,
    requires_cuda,
)

import pyops
from pyops import reference

DEVICE_BACKENDS = device_backends()

# Kernels round K', V' (and, in Triton, the probabilities) to the input dtype before the
# second product; the reference does not, so half types get a little more room.
TOL = {
    torch.float64: dict(atol=1e-9, rtol=1e-7),
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=1.5e-1, rtol=6e-2),  # gradients of E sum ~100 rounded terms
}


def randn(*shape, dtype=torch.float32, device="cpu", seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def make_qkv(B, H, n, d, dtype, device, Hkv=None, seed=0):
    Hkv = H if Hkv is None else Hkv
    return (
        randn(B, H, n, d, dtype=dtype, device=device, seed=seed),
        randn(B, Hkv, n, d, dtype=dtype, device=device, seed=seed + 1),
        randn(B, Hkv, n, d, dtype=dtype, device=device, seed=seed + 2),
    )


def make_proj(shape, dtype, device, seed=10):
    # scaled so that scores stay O(1) and the softmax is not saturated
    return randn(*shape, dtype=dtype, device=device, seed=seed, scale=1.0 / math.sqrt(shape[-2]))


def attention(backend, **kw):
    return lambda q, k, v, E, F=None: pyops.linformer_attention(q, k, v, E, F, backend=backend, **kw)


def ref_attention(**kw):
    return lambda q, k, v, E, F=None: reference.linformer_attention(q, k, v, E, F, **kw)


# ---- forward and all gradients against the reference --------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("sharing", ["shared", "per_head", "kv_shared", "one_kv_head"])
def test_matches_reference(device, backend, sharing):
    B, H, n, d, k = 2, 3, 37, 16, 9  # n not a multiple of any tile
    for dtype in dtypes_for(device, backend):
        if dtype == torch.float64 and backend == "triton":
            continue  # Triton runs float16/bfloat16/float32 (float64 is rejected, see below)
        q, kk, v = make_qkv(B, H, n, d, dtype, device, Hkv=1 if sharing == "one_kv_head" else H)
        shape = (H, n, k) if sharing in ("per_head", "one_kv_head") else (n, k)
        E = make_proj(shape, dtype, device, seed=10)
        F = None if sharing == "kv_shared" else make_proj(shape, dtype, device, seed=11)
        inputs = (q, kk, v, E) if F is None else (q, kk, v, E, F)
        assert_matches_reference(attention(backend), ref_attention(), inputs, tol=TOL[dtype])


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize(
    "n,k,d",
    [(65, 1, 16), (130, 67, 32), (5, 3, 64), (33, 16, 128), (1, 4, 16), (70, 20, 24)],
    ids=lambda v: str(v),
)
def test_odd_sizes(device, backend, n, k, d):
    # n beyond one 64-row tile, k = 1, k beyond one key tile, d in {16, 32, 64, 128} and a
    # non-power of two
    q, kk, v = make_qkv(1, 2, n, d, torch.float32, device, seed=3)
    E, F = make_proj((n, k), torch.float32, device, 4), make_proj((2, n, k), torch.float32, device, 5)
    assert_matches_reference(attention(backend), ref_attention(), (q, kk, v, E, F), tol=TOL[torch.float32])


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_cross_attention_lengths(device, backend):
    # queries and keys of different lengths (n_q != n)
    q = randn(2, 2, 19, 16, device=device, seed=1)
    _, k, v = make_qkv(2, 2, 45, 16, torch.float32, device, seed=2)
    E = make_proj((45, 8), torch.float32, device)
    assert_matches_reference(attention(backend), ref_attention(), (q, k, v, E), tol=TOL[torch.float32])


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_scale_and_non_contiguous(device, backend):
    base = randn(2, 40, 3, 16, device=device, seed=7)  # (B, n, H, d): transposed views below
    q, k, v = base.transpose(1, 2), (base * 0.5).transpose(1, 2), (base + 1).transpose(1, 2)
    assert not q.is_contiguous()
    Ebig = make_proj((9, 40), torch.float32, device).t()  # non-contiguous E
    inputs = (q, k, v, Ebig)
    assert_matches_reference(attention(backend, scale=0.3), ref_attention(scale=0.3), inputs, tol=TOL[torch.float32])


# ---- n < n_max and key padding --------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per_head"])
def test_shorter_than_n_max(device, backend, per_head):
    n, n_max, k = 37, 50, 9
    q, kk, v = make_qkv(2, 2, n, 16, torch.float32, device)
    shape = (2, n_max, k) if per_head else (n_max, k)
    E, F = make_proj(shape, torch.float32, device, 1), make_proj(shape, torch.float32, device, 2)
    assert_matches_reference(attention(backend), ref_attention(), (q, kk, v, E, F), tol=TOL[torch.float32])
    # the unused rows of E get zero gradient, and the result is that of E[:n]
    E_ = E.clone().requires_grad_()
    out = pyops.linformer_attention(q, kk, v, E_, F, backend=backend)
    (gE,) = torch.autograd.grad(out.sum(), E_)
    assert torch.all(gE[..., n:, :] == 0) and torch.any(gE[..., :n, :] != 0)
    torch.testing.assert_close(out, pyops.linformer_attention(q, kk, v, E[..., :n, :], F[..., :n, :], backend=backend))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_key_padding_mask(device, backend):
    B, H, n, d, k = 2, 2, 37, 16, 9
    q, kk, v = make_qkv(B, H, n, d, torch.float32, device)
    E, F = make_proj((n, k), torch.float32, device, 1), make_proj((H, n, k), torch.float32, device, 2)
    mask = torch.zeros(B, n, dtype=torch.bool, device=device)
    mask[0, 30:] = True  # padding at the end of the first sequence
    mask[1, ::5] = True  # and scattered in the second
    fn = lambda q, k, v, E, F: pyops.linformer_attention(q, k, v, E, F, key_padding_mask=mask, backend=backend)
    ref = lambda q, k, v, E, F: reference.linformer_attention(q, k, v, E, F, key_padding_mask=mask)
    assert_matches_reference(fn, ref, (q, kk, v, E, F), tol=TOL[torch.float32])
    # padded keys change nothing: sequence 0 equals the unpadded length-30 sequence
    out = fn(q, kk, v, E, F)
    want = pyops.linformer_attention(q[:1], kk[:1, :, :30], v[:1, :, :30], E, F, backend=backend)
    torch.testing.assert_close(out[:1], want, atol=1e-5, rtol=1e-4)
    # garbage in padded rows does not leak, and they get no gradient
    k2, v2 = kk.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 1e4
    v2[mask[:, None, :, None].expand_as(v2)] = float("nan")
    k2.requires_grad_()
    out2 = fn(q, k2, v2, E, F)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-4)
    (gk,) = torch.autograd.grad(out2.sum(), k2)
    assert torch.all(gk[mask[:, None, :, None].expand_as(gk)] == 0)


# ---- dropout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_dropout_matches_reference(device, backend):
    # every backend draws the same counter-based mask from the seed: exact comparison possible
    q, kk, v = make_qkv(2, 2, 37, 16, torch.float32, device)
    E, F = make_proj((37, 9), torch.float32, device, 1), make_proj((37, 9), torch.float32, device, 2)

    def seeded(fn):
        def run(*args):
            torch.manual_seed(1234)
            return fn(*args)

        return run

    assert_matches_reference(
        seeded(attention(backend, dropout_p=0.3)), seeded(ref_attention(dropout_p=0.3)), (q, kk, v, E, F), tol=TOL[torch.float32]
    )


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_dropout_semantics(device, backend):
    q, kk, v = make_qkv(1, 2, 64, 16, torch.float32, device)
    E = make_proj((64, 32), torch.float32, device, 1)
    exact = pyops.linformer_attention(q, kk, v, E, backend=backend)
    torch.testing.assert_close(pyops.linformer_attention(q, kk, v, E, dropout_p=0.0, backend=backend), exact, rtol=0, atol=0)
    a = pyops.linformer_attention(q, kk, v, E, dropout_p=0.5, backend=backend)
    b = pyops.linformer_attention(q, kk, v, E, dropout_p=0.5, backend=backend)
    assert not torch.allclose(a, exact) and not torch.allclose(a, b)  # a fresh seed per call
    torch.manual_seed(5)
    c = pyops.linformer_attention(q, kk, v, E, dropout_p=0.5, backend=backend)
    torch.manual_seed(5)
    torch.testing.assert_close(pyops.linformer_attention(q, kk, v, E, dropout_p=0.5, backend=backend), c, rtol=0, atol=0)
    assert torch.all(pyops.linformer_attention(q, kk, v, E, dropout_p=1.0, backend=backend) == 0)
    keep = reference.linformer.dropout_keep(99, 4, 3, 257, 64, 0.3)
    assert abs(keep.float().mean().item() - 0.7) < 0.01


# ---- projection alone ----------------------------------------------------------------------


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("layout", ["4d_shared", "4d_per_head", "3d_shared", "3d_per_head", "masked"])
def test_project_matches_reference(device, backend, layout):
    B, H, n, d, k = 2, 3, 41, 16, 10
    for dtype in dtypes_for(device, backend):
        if dtype == torch.float64 and backend == "triton":
            continue
        x = randn(B, n, d, dtype=dtype, device=device) if layout.startswith("3d") else randn(B, H, n, d, dtype=dtype, device=device)
        E = make_proj((H, n + 4, k) if "per_head" in layout else (n + 4, k), dtype, device)
        mask = None
        if layout == "masked":
            mask = torch.rand(B, n, generator=torch.Generator().manual_seed(3)).lt(0.3).to(device)
        fn = lambda x, E: pyops.linformer_project(x, E, mask, backend=backend)
        ref = lambda x, E: reference.linformer_project(x, E, mask)
        assert_matches_reference(fn, ref, (x, E), tol=TOL[dtype])


# ---- gradcheck, opcheck, compile ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_gradcheck(backend):
    q, k, v = make_qkv(1, 2, 6, 3, torch.float64, "cpu")
    E, F = make_proj((8, 4), torch.float64, "cpu", 1), make_proj((2, 8, 4), torch.float64, "cpu", 2)
    mask = torch.tensor([[False, False, True, False, False, True]])
    assert_gradcheck(lambda q, k, v, E, F: pyops.linformer_attention(q, k, v, E, F, key_padding_mask=mask, backend=backend), (q, k, v, E, F))

    def with_dropout(q, k, v, E):
        torch.manual_seed(3)  # the same dropout mask at every evaluation
        return pyops.linformer_attention(q, k, v, E, dropout_p=0.4, backend=backend)

    assert_gradcheck(with_dropout, (q, k, v, E))
    assert_gradcheck(lambda x, E: pyops.linformer_project(x, E, mask, backend=backend), (k, F))


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_triton_float32():
    # Triton has no float64; a float32 finite-difference check with loose tolerances instead
    pytest.importorskip("triton")
    if not pyops._backend.triton_interpreted() and not HAS_CUDA:
        pytest.skip("needs the Triton interpreter or a GPU")
    device = "cuda" if HAS_CUDA else "cpu"
    q, k, v = make_qkv(1, 1, 5, 16, torch.float32, device)
    E = make_proj((5, 3), torch.float32, device, 1)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, E)]
    fn = lambda q, k, v, E: pyops.linformer_attention(q, k, v, E, backend="triton")
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-2, atol=5e-3, rtol=5e-2, fast_mode=True)


def test_triton_rejects_float64():
    q, k, v = make_qkv(1, 1, 5, 4, torch.float64, "cpu")
    with pytest.raises(TypeError, match="backend 'triton' supports float16/bfloat16/float32, got float64"):
        pyops.linformer_attention(q, k, v, make_proj((5, 3), torch.float64, "cpu"), backend="triton")


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_opcheck(device, backend):
    q, k, v = make_qkv(2, 2, 7, 16, torch.float32, device)
    E = make_proj((2, 7, 3), torch.float32, device).requires_grad_()
    mask = torch.tensor([[False] * 6 + [True], [False] * 7], device=device)
    assert_opcheck(ops_for(backend).linformer_project, (k.requires_grad_(), E, mask))
    assert_opcheck(ops_for(backend).linformer_project, (v.requires_grad_(), E.detach()[0], None))
    g = randn(2, 2, 3, 16, device=device, seed=9)
    assert_opcheck(ops_for(backend).linformer_project_backward, (g, k.detach(), E.detach(), mask))
    kp, vp = randn(2, 2, 3, 16, device=device, seed=4), randn(2, 2, 3, 16, device=device, seed=5)
    attend = ops_for(backend).linformer_attend
    assert_opcheck(attend, (q.requires_grad_(), kp.requires_grad_(), vp.requires_grad_(), 0.25, 0.0, 0))
    assert_opcheck(attend, (q, kp, vp, 0.25, 0.2, 77))
    out, lse = attend(q.detach(), kp.detach(), vp.detach(), 0.25, 0.2, 77)
    scores = torch.einsum("bhid,bhjd->bhij", q.detach(), kp.detach()) * 0.25
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=1e-5, rtol=1e-5)  # dropout-free
    go = randn(2, 2, 7, 16, device=device, seed=6)
    assert_opcheck(ops_for(backend).linformer_attend_backward, (go, q.detach(), kp.detach(), vp.detach(), out, lse, 0.25, 0.2, 77))


@pytest.mark.parametrize("device,backend", DEVICE_BACKENDS)
def test_compile_fullgraph(device, backend):
    # float64 where the backend has it: the compiled graph may hand the GEMMs differently laid out
    # gradients, and the E gradient (a long sum) then differs from eager by float32 rounding
    dtype = torch.float32 if backend == "triton" else torch.float64
    q, k, v = make_qkv(1, 2, 20, 16, dtype, device)
    E = make_proj((24, 8), dtype, device)
    mask = torch.zeros(1, 20, dtype=torch.bool, device=device)
    mask[0, -3:] = True
    fn = lambda q, k, v, E: pyops.linformer_attention(q, k, v, E, key_padding_mask=mask, backend=backend).sin()
    assert_compile_matches_eager(fn, (q, k, v, E))


def test_compile_inductor_cpu():
    # float64: inductor reorders the surrounding float arithmetic, and the E gradient sums many terms
    q, k, v = make_qkv(1, 2, 20, 16, torch.float64, "cpu")
    E = make_proj((20, 8), torch.float64, "cpu")
    assert_compile_matches_eager(lambda q, k, v, E: pyops.linformer_attention(q, k, v, E).sin() * 2, (q, k, v, E), backend="inductor")


# ---- bad inputs --------------------------------------------------------------------------------


def test_causal_is_rejected_with_explanation():
    q, k, v = make_qkv(1, 1, 4, 4, torch.float32, "cpu")
    with pytest.raises(ValueError, match="causal=True is not supported.*projects keys and values"):
        pyops.linformer_attention(q, k, v, make_proj((4, 2), torch.float32, "cpu"), causal=True)


def _bad_cases():
    q, k, v = make_qkv(2, 3, 8, 4, torch.float32, "cpu")
    E = make_proj((8, 5), torch.float32, "cpu")
    return [
        ("q_3d", (q[0], k, v, E), {}, "q must be a 4-D"),
        ("kv_shape", (q, k, v[:, :, :5], E), {}, "k and v must have the same shape"),
        ("k_heads", (q, k[:, :2], v[:, :2], E), {}, r"k and v must have shape \(B, H, n, d\) = \(2, 3, n, 4\)"),
        ("k_dim", (q, k[..., :3], v[..., :3], E), {}, r"k and v must have shape"),
        ("dtype", (q, k.double(), v.double(), E), {}, "same dtype"),
        ("int", (q.long(), k, v, E), {}, "q must be a floating-point tensor"),
        ("E_short", (q, k, v, E[:6]), {}, "E has n_max = 6 rows but the sequence has n = 8"),
        ("E_1d", (q, k, v, E[0]), {}, r"E must have shape \(n_max, k\) or \(H, n_max, k\)"),
        ("E_heads", (q, k, v, E.expand(2, 8, 5)), {}, "per-head E has 2 heads but the keys/queries have 3"),
        ("F_k", (q, k, v, E, E[:, :4]), {}, "E and F must project to the same k"),
        ("E_k0", (q, k, v, E[:, :0]), {}, "k >= 1"),
        ("mask_shape", (q, k, v, E), dict(key_padding_mask=torch.zeros(2, 7, dtype=torch.bool)), r"key_padding_mask must have shape \(B, n\) = \(2, 8\)"),
        ("mask_dtype", (q, k, v, E), dict(key_padding_mask=torch.zeros(2, 8)), "key_padding_mask must be a bool tensor"),
        ("dropout", (q, k, v, E), dict(dropout_p=1.5), r"dropout_p must be a number in \[0, 1\]"),
        ("scale", (q, k, v, E), dict(scale=float("nan")), "scale must be a finite number"),
        ("device", (q, k, v, E.to("meta")), {}, "q is on cpu but E is on meta"),
        ("E_type", (q, k, v, [[1.0]]), {}, "E must be a tensor"),
    ]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("case", range(len(_bad_cases())), ids=[c[0] for c in _bad_cases()])
def test_bad_inputs(backend, case):
    _, args, kwargs, match = _bad_cases()[case]
    with pytest.raises((ValueError, TypeError), match=match):
        pyops.linformer_attention(*args, backend=backend, **kwargs)


def test_bad_project_inputs():
    x = randn(2, 3, 8, 4)
    with pytest.raises(ValueError, match=r"x must be a \(B, H, n, d\) or \(B, n, d\) tensor"):
        pyops.linformer_project(x[0, 0], randn(8, 2))
    with pytest.raises(ValueError, match="E has n_max = 4 rows but the sequence has n = 8"):
        pyops.linformer_project(x, randn(4, 2))
    with pytest.raises(ValueError, match="per-head E has 2 heads"):
        pyops.linformer_project(x, randn(2, 8, 2))


def test_cpp_op_checks_its_arguments():
    # callers of torch.ops.pyops (C++, other frameworks) get errors too, not crashes
    ops = torch.ops.pyops
    with pytest.raises(RuntimeError, match=r"E must have shape \(n, k\) = \(8, k\)"):
        ops.linformer_project(randn(2, 3, 8, 4), randn(7, 2), None)
    with pytest.raises(RuntimeError, match=r"key_padding_mask must have shape \(B, n\)"):
        ops.linformer_project(randn(2, 3, 8, 4), randn(8, 2), torch.zeros(2, 9, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"kp must have shape \(B, H, k, d\)"):
        ops.linformer_attend(randn(2, 3, 8, 4), randn(2, 3, 5, 3), randn(2, 3, 5, 3), 1.0, 0.0, 0)
    with pytest.raises(RuntimeError, match=r"dropout_p must be in \[0, 1\]"):
        ops.linformer_attend(randn(2, 3, 8, 4), randn(2, 3, 5, 4), randn(2, 3, 5, 4), 1.0, 2.0, 0)
    with pytest.raises(RuntimeError, match=r"lse must have shape"):
        q = randn(1, 1, 3, 4)
        ops.linformer_attend_backward(q, q, randn(1, 1, 2, 4), randn(1, 1, 2, 4), q, torch.zeros(1, 1, 2), 1.0, 0.0, 0)


# ---- module -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [dict(), dict(share_kv=True), dict(sharing="kv"), dict(sharing="none"), dict(one_kv_head=True), dict(sharing="none", one_kv_head=True)],
    ids=["headwise", "share_kv", "kv", "none", "one_kv_head", "none_one_kv_head"],
)
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_module_matches_reference_backend(options, backend):
    if backend == "triton" and not (pyops._backend.triton_interpreted() or HAS_CUDA):
        pytest.skip("needs the Triton interpreter")
    torch.manual_seed(0)
    layer = pyops.LinformerSelfAttention(32, seq_len=24, k=8, heads=2, backend=backend, **options)
    x = randn(2, 20, 32, seed=3).requires_grad_()  # n = 20 < seq_len
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[1, 15:] = True
    out = layer(x, key_padding_mask=mask)
    assert out.shape == (2, 20, 32)
    grads = torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])
    layer.backend = "reference"
    want = layer(x, key_padding_mask=mask)
    want_grads = torch.autograd.grad(want.square().sum(), [x, *layer.parameters()])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    n_proj = sum(p.numel() for name, p in layer.named_parameters() if name in ("E", "F"))
    per = 24 * 8 * (layer.heads if options.get("sharing") == "none" else 1)
    separate_f = options.get("sharing", "headwise") in ("headwise", "none") and not options.get("share_kv")
    assert n_proj == per * (2 if separate_f else 1)


def _lucidrains_state_dict(dim, seq_len, k, heads, dim_head, one_kv_head, share_kv, seed=0):
    """Random weights under lucidrains' LinformerSelfAttention parameter names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    kv_dim = dim_head if one_kv_head else dim_head * heads
    sd = {"to_q.weight": torch.randn(heads * dim_head, dim, generator=gen) / dim ** 0.5,
          "to_k.weight": torch.randn(kv_dim, dim, generator=gen) / dim ** 0.5,
          "proj_k": torch.randn(seq_len, k, generator=gen) / k ** 0.5,
          "to_out.weight": torch.randn(dim, heads * dim_head, generator=gen) / dim ** 0.5,
          "to_out.bias": torch.randn(dim, generator=gen)}
    if not share_kv:
        sd["to_v.weight"] = torch.randn(kv_dim, dim, generator=gen) / dim ** 0.5
        sd["proj_v"] = torch.randn(seq_len, k, generator=gen) / k ** 0.5
    return sd


def _lucidrains_forward(sd, x, heads, dim_head, context=None):
    """lucidrains' forward written out in plain torch: project the sequence of the keys and values
    (all heads at once) with proj_k / proj_v, then softmax attention per head."""
    kv_in = x if context is None else context
    B, n, _ = x.shape
    m = kv_in.shape[1]
    q = (x @ sd["to_q.weight"].T).view(B, n, heads, dim_head).transpose(1, 2)
    keys = kv_in @ sd["to_k.weight"].T
    values = kv_in @ sd["to_v.weight"].T if "to_v.weight" in sd else keys
    proj_v = sd.get("proj_v", sd["proj_k"])
    keys = torch.einsum("bnd,nk->bkd", keys, sd["proj_k"][:m])
    values = torch.einsum("bnd,nk->bkd", values, proj_v[:m])
    keys, values = (t.reshape(B, t.shape[1], -1, dim_head).transpose(1, 2).expand(-1, heads, -1, -1) for t in (keys, values))
    attn = (q @ keys.transpose(-1, -2) * dim_head ** -0.5).softmax(-1)
    out = (attn @ values).transpose(1, 2).reshape(B, n, heads * dim_head)
    return out @ sd["to_out.weight"].T + sd["to_out.bias"]


@pytest.mark.parametrize("one_kv_head,share_kv", [(False, False), (True, False), (False, True), (True, True)])
def test_module_loads_lucidrains_checkpoints(one_kv_head, share_kv):
    sd = _lucidrains_state_dict(24, 20, 6, 3, 8, one_kv_head, share_kv)
    layer = pyops.LinformerSelfAttention.from_lucidrains(sd, heads=3, backend="cpu")
    assert (layer.seq_len, layer.k, layer.heads, layer.dim_head, layer.kv_heads) == (20, 6, 3, 8, 1 if one_kv_head else 3)
    x, ctx = randn(2, 17, 24, seed=1), randn(2, 12, 24, seed=2)
    torch.testing.assert_close(layer(x), _lucidrains_forward(sd, x, 3, 8), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer(x, context=ctx), _lucidrains_forward(sd, x, 3, 8, context=ctx), atol=1e-5, rtol=1e-4)


def test_module_lucidrains_errors_and_context_checks():
    sd = _lucidrains_state_dict(24, 20, 6, 3, 8, False, False)
    with pytest.raises(ValueError, match=r"from_lucidrains: state_dict has keys .* cannot place: \['extra'\]"):
        pyops.LinformerSelfAttention.from_lucidrains({**sd, "extra": torch.zeros(1)}, heads=3)
    with pytest.raises(ValueError, match=r"missing \['proj_k'\]"):
        pyops.LinformerSelfAttention.from_lucidrains({n: t for n, t in sd.items() if n != "proj_k"}, heads=3)
    with pytest.raises(ValueError, match="not divisible by heads = 5"):
        pyops.LinformerSelfAttention.from_lucidrains(sd, heads=5)
    layer = pyops.LinformerSelfAttention.from_lucidrains(sd, heads=3)
    with pytest.raises(ValueError, match=r"pyops.LinformerSelfAttention: context must have shape \(B, m, dim\) = \(2, m, 24\)"):
        layer(randn(2, 5, 24), context=randn(2, 5, 16))
    with pytest.raises(ValueError, match="exceeds seq_len = 20"):
        layer(randn(2, 5, 24), context=randn(2, 21, 24))
    with pytest.raises(TypeError):
        pyops.LinformerSelfAttention(16, 16, 4, 2, 8, True)  # lucidrains' sixth argument is keyword-only here


def test_module_layerwise_sharing_and_dropout():
    E = pyops.shared_projection(16, k=4)
    layers = torch.nn.Sequential(*[pyops.LinformerSelfAttention(16, 16, k=4, heads=2, sharing="layerwise", projection=E, dropout=0.2) for _ in range(3)])
    assert all(layer.shared_E is E for layer in layers)
    assert sum(p is E for p in layers.parameters()) == 1  # counted once
    x = randn(2, 16, 16)
    layers.train()
    torch.autograd.grad(layers(x).sum(), E)  # one gradient, accumulated over the layers
    layers.eval()
    torch.testing.assert_close(layers(x), layers(x), rtol=0, atol=0)  # no dropout in eval
    with pytest.raises(ValueError, match="sharing='layerwise' needs projection"):
        pyops.LinformerSelfAttention(16, 16, k=4, sharing="layerwise")
    with pytest.raises(ValueError, match="sharing must be one of"):
        pyops.LinformerSelfAttention(16, 16, sharing="global")
    with pytest.raises(ValueError, match="exceeds seq_len = 16"):
        pyops.LinformerSelfAttention(16, 16, k=4, heads=2)(randn(1, 17, 16))
    assert abs(E.std().item() - 1 / math.sqrt(3 * 4)) < 0.05


# ---- GPU only: the benchmark shapes' dtype, larger sizes -------------------------------------


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per_head"])
def test_gpu_bf16_large(backend, per_head):
    B, H, n, d, k = 2, 4, 1000, 64, 256
    q, kk, v = make_qkv(B, H, n, d, torch.bfloat16, "cuda")
    E = make_proj((H, n, k) if per_head else (n, k), torch.bfloat16, "cuda")
    mask = torch.zeros(B, n, dtype=torch.bool, device="cuda")
    mask[1, 900:] = True
    g = torch.randn(B, H, n, d, device="cuda", generator=torch.Generator("cuda").manual_seed(3), dtype=torch.bfloat16)

    def run(f, inputs):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = f(*leaves, key_padding_mask=mask)
        return [out, *torch.autograd.grad(out, leaves, g.to(out.dtype))]

    # output and every gradient: error against the float32 reference (on the same bf16 values) at
    # most about that of the eager reference run in bf16 (twice it, plus one bf16 rounding)
    want = run(reference.linformer_attention, [t.float() for t in (q, kk, v, E)])
    eager = run(reference.linformer_attention, (q, kk, v, E))
    got = run(lambda *a, **kw: pyops.linformer_attention(*a, **kw, backend=backend), (q, kk, v, E))
    for i, (a, b, w) in enumerate(zip(got, eager, want)):
        scale = w.abs().max().item()
        err, eager_err = (a.float() - w).abs().max().item(), (b.float() - w).abs().max().item()
        assert err <= 2 * eager_err + torch.finfo(torch.bfloat16).eps * scale, (i, err, eager_err, scale)
