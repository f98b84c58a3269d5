"""Regression tests of the seven defects of issue #20, each against the reference (or the error
a clear check gives). Inputs that crashed the process run in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import pyops
from pyops import reference as ref
from pyops.sac import random_parameters


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a segfault fails the test instead of the run)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def _sac_params(C, O, groups=1, bias=True, dtype=torch.float64):
    return random_parameters(C, O, groups=groups, bias=bias, dtype=dtype, generator=torch.Generator().manual_seed(3))


# ---- defect 1: sac_conv2d with zero input (or output) channels -------------------------------


def test_defect1_zero_channels_subprocess():
    """C = 0 segfaulted in csrc/sac/sac.h; now a defined result on every algorithm."""
    proc = _run_isolated(
        """
        import torch, pyops
        from pyops.sac import random_parameters
        p = random_parameters(0, 6, generator=torch.Generator().manual_seed(0))
        for algorithm in ("composition", "igemm"):
            y = pyops.sac_conv2d(torch.randn(2, 0, 8, 9), *p, 1, 1, 1, 1, backend="cpu", algorithm=algorithm)
            print(tuple(y.shape))
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["(2,", "6,", "8,", "9)"] * 2


@pytest.mark.parametrize("C,O", [(0, 6), (4, 0), (0, 0)])
@pytest.mark.parametrize("algorithm", ["composition", "igemm"])
@pytest.mark.parametrize("bias", [True, False])
def test_defect1_empty_channels_match_reference(C, O, algorithm, bias):
    x = torch.randn(2, C, 8, 9, dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() if p is not None else None for p in _sac_params(C, O, bias=bias)]
    got = pyops.sac_conv2d(x, *params, 1, 1, 1, 1, backend="cpu", algorithm=algorithm)
    want = ref.sac_conv2d(x, *params, 1, 1, 1, 1)
    # the empty-channel convolution contributes zeros: out = bias + PostCtx(bias), as torch's conv2d
    assert got.shape == want.shape == (2, O, 8, 9)
    torch.testing.assert_close(got, want)
    if C == 0 and O > 0:
        b = params[-1] if bias else torch.zeros(O, dtype=torch.float64)
        expect = b + params[8].view(O, O) @ b + params[9]
        torch.testing.assert_close(got, expect.view(1, O, 1, 1).expand_as(got))
    if got.numel():
        leaves = [t for t in (x, *params) if t is not None]
        g_got = torch.autograd.grad(got.sum(), leaves, allow_unused=True)
        g_want = torch.autograd.grad(want.sum(), leaves, allow_unused=True)
        for a, b in zip(g_got, g_want):
            if b is None:
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b)


def test_defect1_host_code_refuses_empty_channels():
    """The C++ host code itself does not read past empty channel arrays (an error, not a crash)."""
    proc = _run_isolated(
        """
        import torch, pyops
        from pyops.sac import random_parameters
        p = random_parameters(0, 6, generator=torch.Generator().manual_seed(0))
        try:
            torch.ops.pyops.sac_conv2d(torch.randn(2, 0, 8, 9), *p, [1, 1], [1, 1], [1, 1], 1)
        except RuntimeError as e:
            print("refused:", e)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused" in proc.stdout and "channel" in proc.stdout


# ---- defect 2: one key/value head, per-head E, shared F ---------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("per_head", [(True, False), (False, True), (True, True)])
def test_defect2_one_kv_head_mixed_sharing(backend, per_head):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 5, 4, generator=g)
    k = torch.randn(2, 1, 6, 4, generator=g)
    v = torch.randn(2, 1, 6, 4, generator=g)
    E = torch.randn(*((3,) if per_head[0] else ()), 6, 2, generator=g)
    F = torch.randn(*((3,) if per_head[1] else ()), 6, 2, generator=g)
    leaves = [t.requires_grad_() for t in (q, k, v, E, F)]
    got = pyops.linformer_attention(*leaves, backend=backend)
    want = ref.linformer_attention(*leaves)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    gr = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, leaves, gr), torch.autograd.grad(want, leaves, gr)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---- defect 3: a non-affine G_inv ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
def test_defect3_non_affine_G_inv_is_refused(backend):
    x = torch.rand(2, 3, 8, 8)
    G = torch.eye(3).repeat(2, 1, 1)
    G[0, 2, 2] = 2
    with pytest.raises(ValueError, match=r"pyops\.ada\.geometric_color: G_inv .*\[0, 0, 1\]"):
        pyops.ada.geometric_color(x, G, backend=backend)
    G = torch.eye(3).repeat(2, 1, 1)
    G[1, 2, 0] = 0.1
    with pytest.raises(ValueError, match=r"G_inv"):
        pyops.ada.augment(x, G_inv=G, backend=backend)


def test_defect3_affine_G_inv_still_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    G = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    G[:, :2, :] += 0.2 * torch.randn(2, 2, 3, generator=g, dtype=torch.float64)
    got = pyops.ada.geometric_color(x, G, backend="cpu")
    torch.testing.assert_close(got, ref.ada.geometric(x, G))


# ---- defect 4: SAConv2d with fan-in 1 -------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference", "triton"])
def test_defect4_fan_in_one_is_finite(backend):
    torch.manual_seed(0)
    m = pyops.SAConv2d(2, 2, 1, groups=2, backend=backend)
    x = torch.randn(2, 2, 6, 7, requires_grad=True)
    y = m(x)
    assert torch.isfinite(y).all()
    # fan-in 1: the variance of one weight is 0, the standardised weight 0, AWS(W) = beta
    w = ref.sac.aws_weight(m.weight, m.weight_gamma, m.weight_beta)
    torch.testing.assert_close(w, m.weight_beta.expand_as(w))
    y.sum().backward()
    for p in [x, *m.parameters()]:
        assert p.grad is None or torch.isfinite(p.grad).all()
    want = ref.sac_conv2d(x, m.weight, m.weight_gamma, m.weight_beta, m.weight_diff, m.switch.weight, m.switch.bias,
                          m.pre_context.weight, m.pre_context.bias, m.post_context.weight, m.post_context.bias,
                          m.bias, 1, 0, 1, 2)
    torch.testing.assert_close(y, want)


def test_defect4_fan_in_one_gradients_match_reference():
    p = [t.requires_grad_() for t in _sac_params(2, 4, groups=2, bias=True) if t is not None]
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w1 = [t.detach()[:, :, 1:2, 1:2].clone().requires_grad_() if i in (0, 3) else t for i, t in enumerate(p)]
    got = pyops.sac_conv2d(x, *w1, 1, 0, 1, 2, backend="cpu")
    want = ref.sac_conv2d(x, *w1, 1, 0, 1, 2)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got.sum(), [x, *w1]), torch.autograd.grad(want.sum(), [x, *w1])):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)


def test_defect4_fan_in_one_checkpoint_recovery():
    """A plain fan-in-1 conv checkpoint loads as that convolution (gamma, beta recovered finite)."""
    conv = torch.nn.Conv2d(2, 2, 1, groups=2)
    m = pyops.SAConv2d(2, 2, 1, groups=2)
    m.load_state_dict(conv.state_dict(), strict=False)
    assert torch.isfinite(m.weight_gamma).all()
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(m(x), conv(x), atol=1e-5, rtol=1e-5)


# ---- defect 5: subdivision_step in float64 -------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 1, 1), (2, 9, 4)])
def test_defect5_subdivision_step_float64(shape):
    logits = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    up, idx, coords = pyops.subdivision_step(logits, 7, backend="cpu")
    up_ref, idx_ref, coords_ref = ref.subdivision_step(logits, 7)
    assert up.dtype == torch.float64
    torch.testing.assert_close(up, up_ref, atol=1e-12, rtol=1e-12)


# ---- defect 6: AugmentPipe hyper-parameters ------------------------------------------------------


@pytest.mark.parametrize("kwargs,arg", [
    (dict(p=float("nan")), "p"), (dict(p=-0.1), "p"), (dict(p=1.5), "p"), (dict(p=float("inf")), "p"),
    (dict(xflip=float("nan")), "xflip"), (dict(xflip=-1), "xflip"), (dict(xflip=float("inf")), "xflip"),
    (dict(scale_std=-0.2), "scale_std"), (dict(noise_std=float("nan")), "noise_std"),
    (dict(rotate_max=-1), "rotate_max"), (dict(cutout_size=2.0), "cutout_size"),
    (dict(imgfilter_bands=(1, 1, -1, 1)), "imgfilter_bands"), (dict(p="0.5"), "p"),
])
def test_defect6_augment_pipe_refuses_bad_hyper_parameters(kwargs, arg):
    with pytest.raises((ValueError, TypeError), match=rf"pyops\.AugmentPipe: {arg}\b"):
        pyops.AugmentPipe(**{"xflip": 1, **kwargs})


def test_defect6_controller_arguments():
    for kwargs, arg in [(dict(target=float("nan")), "target"), (dict(kimg=float("nan")), "kimg"),
                        (dict(interval=0), "interval")]:
        with pytest.raises((ValueError, TypeError), match=rf"pyops\.AdaController: {arg}\b"):
            pyops.AdaController(**kwargs)


# ---- defect 7: unclear errors --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,arg", [(dict(k=0), "k"), (dict(heads=0), "heads"), (dict(k=-1), "k"),
                                        (dict(seq_len=0), "seq_len"), (dict(dim_head=0), "dim_head")])
def test_defect7_linformer_module_hyper_parameters(kwargs, arg):
    args = {"dim": 16, "seq_len": 12, **kwargs}
    with pytest.raises(ValueError, match=rf"LinformerSelfAttention: {arg} must"):
        pyops.LinformerSelfAttention(**args)


def test_defect7_numpy_input_to_modules():
    np = pytest.importorskip("numpy")
    cases = [
        (pyops.LinformerSelfAttention(16, 12, k=4, heads=2), np.zeros((2, 12, 16), np.float32), "LinformerSelfAttention"),
        (pyops.SAConv2d(4, 4, 3, padding=1), np.zeros((1, 4, 8, 8), np.float32), "SAConv2d"),
        (pyops.AugmentPipe(xflip=1), np.zeros((1, 3, 8, 8), np.float32), "AugmentPipe"),
    ]
    for module, x, name in cases:
        with pytest.raises(TypeError, match=rf"pyops\.{name}: (x|images) must be a .*tensor, got numpy\.ndarray"):
            module(x)


def test_defect7_sample_points_for_loss_messages():
    logits = torch.randn(3, 2, 8, 8)
    with pytest.raises(ValueError, match=r"pyops\.sample_points_for_loss: mask_logits must have one channel"):
        pyops.sample_points_for_loss(logits, torch.rand(3, 16, 16), 10)
    with pytest.raises(TypeError, match=r"pyops\.sample_points_for_loss: gt_masks must have dtype bool/uint8/"):
        pyops.sample_points_for_loss(torch.randn(3, 1, 8, 8), torch.randint(0, 2, (3, 16, 16)), 10)


def test_defect7_attention_with_zero_heads():
    q = torch.randn(2, 0, 5, 4)
    kv = torch.randn(2, 0, 6, 4)
    with pytest.raises(ValueError, match=r"pyops\.linformer_attention: q must have at least one head"):
        pyops.linformer_attention(q, kv, kv, torch.randn(6, 2))


def test_defect7_subdivision_inference_messages():
    head = lambda coords, idx: torch.zeros(coords.shape[0], coords.shape[1])  # noqa: E731
    with pytest.raises(ValueError, match=r"pyops\.subdivision_inference: classes"):
        pyops.subdivision_inference(torch.randn(2, 3, 4, 4), head, classes=torch.tensor([0, 5]), num_steps=1, num_points=4)
    with pytest.raises(ValueError, match=r"pyops\.subdivision_inference: num_steps"):
        pyops.subdivision_inference(torch.randn(2, 1, 4, 4), head, num_steps=-1)
    with pytest.raises(ValueError, match=r"pyops\.subdivision_inference: num_points"):
        pyops.subdivision_inference(torch.randn(2, 1, 4, 4), head, num_points=0)
    with pytest.raises(TypeError, match=r"pyops\.subdivision_inference: point_head"):
        pyops.subdivision_inference(torch.randn(2, 1, 4, 4), None)
    bad_head = lambda coords, idx: torch.zeros(coords.shape[0], 3)  # noqa: E731
    with pytest.raises(ValueError, match=r"pyops\.subdivision_inference: point_head returned"):
        pyops.subdivision_inference(torch.randn(2, 1, 4, 4), bad_head, num_steps=1, num_points=5)


def test_defect7_sac_zero_output_channels_is_defined():
    p = _sac_params(3, 0)
    y = pyops.sac_conv2d(torch.randn(2, 3, 8, 8, dtype=torch.float64), *p, 1, 1, 1, 1, backend="cpu")
    assert y.shape == (2, 0, 8, 8)
