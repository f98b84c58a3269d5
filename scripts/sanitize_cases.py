"""Small cases of every CUDA and Triton kernel, for compute-sanitizer (memcheck, racecheck,
initcheck, synccheck; scripts/gpu_check.sh):

    compute-sanitizer --tool memcheck python scripts/sanitize_cases.py [cuda] [triton]

Each case runs a backend (default: cuda) forward and backward on odd sizes, both layouts, several
dtypes and out-of-range / non-finite coordinates, and compares with the reference, so a kernel
that reads or writes out of bounds, races or reads uninitialised memory is caught by the sanitizer
and a wrong one by the comparison.
"""

import os
import sys

import torch

# On a machine without a GPU the same cases run on the C++ CPU kernels in place of the CUDA ones
# and on the Triton interpreter (a dry run of this script).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pyops  # noqa: E402
from pyops import reference  # noqa: E402

BACKEND = DEVICE  # the backend under test; main() sets it from the command line


def case(N, C, H, W, P, dtype, channels_last, align_corners):
    x = torch.randn(N, C, H, W, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    c = torch.rand(N, P, 2, device=DEVICE) * 1.4 - 0.2
    c[0, :3] = torch.tensor([[float("nan"), 0.5], [float("inf"), 0.1], [1e30, -1e30]], device=DEVICE)
    x.requires_grad_()
    c.requires_grad_()
    out = pyops.point_sample(x, c, align_corners, backend=BACKEND)
    g = torch.randn_like(out)
    gx, gc = torch.autograd.grad(out, (x, c), g)
    # the reference on the CPU: CUDA's grid_sample treats non-finite coordinates differently
    want = reference.point_sample(x.cpu(), c.cpu(), align_corners).to(DEVICE)
    wx, wc = torch.autograd.grad(want, (x, c), g)
    tol = dict(atol=1e-2, rtol=1e-2, equal_nan=True)
    torch.testing.assert_close(out, want, **tol)
    torch.testing.assert_close(gx, wx, **tol)
    torch.testing.assert_close(gc, wc, **tol)


def selection_cases():
    # point selection (drawn and supplied candidates, per-row classes), subdivision, batch_index
    logits = torch.randn(5, 3, 13, 17, device=DEVICE, dtype=torch.float16)
    classes = torch.tensor([0, 2, 1, 2, 0], device=DEVICE)
    for candidates in (None, torch.rand(5, 111, 2, device=DEVICE)):
        pts = pyops.get_uncertain_point_coords_with_randomness(
            logits, None, 37, 3.0, 0.75, classes=classes, candidates=candidates, backend=BACKEND
        )
        assert pts.shape == (5, 37, 2) and bool(((pts >= 0) & (pts < 1)).all())
    up, idx, coords = pyops.subdivision_step(logits[:, 0], 100, backend=BACKEND)
    want_up = reference.subdivision_step(logits[:, 0], 100)[0]
    torch.testing.assert_close(up, want_up, atol=1e-2, rtol=1e-2)
    feats = [torch.randn(2, 7, 9, 11, device=DEVICE, requires_grad=True)]
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 20.0]], device=DEVICE), torch.tensor([[0.0, 0.0, 40.0, 36.0], [5.0, 5.0, 9.0, 9.0]], device=DEVICE)]
    out, _ = pyops.point_sample_fine_grained_features(feats, [1 / 4], boxes, torch.rand(3, 19, 2, device=DEVICE), backend=BACKEND)
    out.sum().backward()
    pyops.sample_points_for_loss(torch.randn(4, 1, 16, 16, device=DEVICE), torch.rand(4, 64, 64, device=DEVICE) > 0.5, 50, backend=BACKEND)


def linformer_case(B, H, n, d, k, dtype, per_head, masked, dropout_p):
    q, kk, v = (torch.randn(B, H, n, d, device=DEVICE, dtype=dtype, requires_grad=True) for _ in range(3))
    E = (torch.randn((H, n + 3, k) if per_head else (n + 3, k), device=DEVICE) / n**0.5).to(dtype).requires_grad_()
    mask = (torch.rand(B, n, device=DEVICE) < 0.2) if masked else None
    torch.manual_seed(0)
    out = pyops.linformer_attention(q, kk, v, E, key_padding_mask=mask, dropout_p=dropout_p, backend=BACKEND)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, kk, v, E), g)
    torch.manual_seed(0)
    want = reference.linformer_attention(q, kk, v, E, key_padding_mask=mask, dropout_p=dropout_p)
    wants = torch.autograd.grad(want, (q, kk, v, E), g)
    tol = dict(atol=1e-1, rtol=5e-2) if dtype in (torch.float16, torch.bfloat16) else dict(atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out, want, **tol)
    for a, b in zip(got, wants):
        torch.testing.assert_close(a, b, **tol)


def sac_cases():
    # switchable atrous convolution: odd sizes, stride 2, groups, both layouts, forward + backward,
    # both forward algorithms; the igemm ones also with several pixel / channel tiles (16-bit types
    # take the tensor-core kernel), dilation 2 and a 5x5 kernel (large shared-memory halo)
    cases = [((2, 12, 6, 11, 9), 3, 2, 1, 3, "composition"), ((2, 12, 6, 11, 9), 3, 2, 1, 3, "igemm"),
             ((1, 40, 72, 23, 37), 3, 1, 1, 2, "igemm"), ((1, 20, 24, 13, 19), 5, 2, 2, 1, "igemm")]
    for (N, C, O, H, W), k, stride, dilation, groups, algorithm in cases:
        for dtype in dtypes(torch.float32, torch.bfloat16, *((torch.float16,) if algorithm == "igemm" else ())):
            for channels_last in (False, True):
                sac_case(N, C, O, H, W, k, stride, dilation, groups, algorithm, dtype, channels_last)


def sac_case(N, C, O, H, W, k, stride, dilation, groups, algorithm, dtype, channels_last):
    from pyops.sac import random_parameters

    x = torch.randn(N, C, H, W, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    params = random_parameters(C, O, k, groups, True, dtype=dtype, device=DEVICE)
    leaves = [x.requires_grad_(), *[p.requires_grad_() for p in params]]
    padding = dilation * (k - 1) // 2
    out = pyops.sac_conv2d(*leaves, stride, padding, dilation, groups, backend=BACKEND, algorithm=algorithm)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]  # float64 reference, same inputs
    want = reference.sac_conv2d(*leaves64, stride, padding, dilation, groups)
    g = torch.randn_like(out)
    got_g = torch.autograd.grad(out, leaves, g)
    want_g = torch.autograd.grad(want, leaves64, g.double())
    rel = {torch.bfloat16: 0.05, torch.float16: 0.01}.get(dtype, 1e-3)  # of the largest magnitude
    for a, b in zip((out, *got_g), (want, *want_g)):
        err = (a.float() - b.float()).abs().max().item()
        assert err <= rel * (b.float().abs().max().item() + 1e-3), (algorithm, dtype, tuple(a.shape), err)


def ada_case(B, C, H, W, dtype, channels_last, geom=True, color=True):
    """pyops.ada.geometric_color on the CUDA backend, forward and adjoint, against the reference."""
    from pyops.reference import ada as ada_ref

    x = torch.rand(B, C, H, W, device=DEVICE, dtype=dtype) * 2 - 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    theta = torch.rand(B, device=DEVICE) * 6.28
    s = torch.exp2(torch.randn(B, device=DEVICE) * 0.5)
    G = pyops.ada.rotate2d(theta) @ pyops.ada.scale2d(s, 1 / s) @ pyops.ada.translate2d(torch.randn(B, device=DEVICE) * 3, torch.randn(B, device=DEVICE))
    C_ = torch.eye(4, device=DEVICE).repeat(B, 1, 1) + 0.2 * torch.randn(B, 4, 4, device=DEVICE)
    G, C_ = (G if geom else None), (C_ if color else None)
    x.requires_grad_()
    out = pyops.ada.geometric_color(x, G, C_, backend=BACKEND)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    xd = x.detach().double().requires_grad_()
    want = xd
    if G is not None:
        want = ada_ref.geometric(want, G.double())
    if C_ is not None:
        want = ada_ref.color(want, C_.double())
    (wx,) = torch.autograd.grad(want, xd, g.double())
    tol = dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out.double(), want, **tol)
    torch.testing.assert_close(gx.double(), wx, **tol)


def ada_filter_case(B, C, H, W, dtype):
    """pyops.ada.filter_noise_cutout on the CUDA backend, forward and adjoint, against the reference."""
    from pyops.reference import ada as ada_ref

    x = (torch.rand(B, C, H, W, device=DEVICE) * 2 - 1).to(dtype).requires_grad_()
    h = torch.exp2(torch.randn(B, 4, device=DEVICE)) @ ada_ref.filter_bank(torch.float32, DEVICE)
    sigma, noise = torch.rand(B, device=DEVICE) * 0.2, torch.randn(B, C, H, W, device=DEVICE)
    boxes = torch.cat([torch.rand(B, 2, device=DEVICE), torch.full((B, 2), 0.5, device=DEVICE)], 1)
    out = pyops.ada.filter_noise_cutout(x, h, sigma, noise, boxes, backend=BACKEND)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    xd = x.detach().double().requires_grad_()
    want = ada_ref.cutout(ada_ref.add_noise(ada_ref.filter_taps(xd, h.double()), sigma.double(), noise.double()), boxes.double())
    (wx,) = torch.autograd.grad(want, xd, g.double())
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gx.double(), wx, atol=2e-2, rtol=2e-2)


def dtypes(*candidates, triton_float64=True):
    """``candidates`` less what the backend under test lacks: bfloat16 under the Triton interpreter
    (it computes it wrongly), float64 where a Triton kernel has no float64 variant."""
    drop = set()
    if BACKEND == "triton":
        drop |= {torch.bfloat16} if DEVICE == "cpu" else set()
        drop |= set() if triton_float64 else {torch.float64}
    return [d for d in candidates if d not in drop]


def run_cases():
    for dtype in dtypes(torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for channels_last in (False, True):
            for align_corners in (False, True):
                case(3, 37, 7, 11, 53, dtype, channels_last, align_corners)
    case(2, 1, 1, 1, 5, torch.float32, False, False)
    case(1, 300, 5, 3, 1000, torch.float32, True, False)
    done("point_sample")
    selection_cases()
    done("point selection, subdivision, fine-grained features, Mask2Former sampling")
    # Linformer kernels: odd n, k (partial tiles), every head-dim bucket, dtypes, masks, dropout
    for dtype in dtypes(torch.float32, torch.float16, torch.bfloat16, torch.float64, triton_float64=False):
        linformer_case(2, 3, 77, 24, 37, dtype, per_head=False, masked=True, dropout_p=0.0)
    for d in (16, 64, 100, 128):
        linformer_case(1, 2, 131, d, 65, torch.float32, per_head=True, masked=False, dropout_p=0.2)
    linformer_case(1, 1, 1, 8, 1, torch.float32, per_head=False, masked=False, dropout_p=0.0)
    done("linformer_attention")
    sac_cases()
    done("sac_conv2d")
    for dtype in dtypes(torch.float32, torch.float16, torch.bfloat16, torch.float64):
        ada_case(3, 3, 13, 9, dtype, channels_last=False)
    ada_case(2, 1, 7, 16, torch.float32, channels_last=True)
    ada_case(2, 3, 1, 5, torch.float32, channels_last=False)
    ada_case(2, 3, 8, 8, torch.float32, channels_last=False, geom=False)
    ada_case(2, 3, 8, 8, torch.float32, channels_last=False, color=False)
    for dtype in dtypes(torch.float32, torch.float16, torch.float64):
        ada_filter_case(2, 3, 23, 30, dtype)
    ada_filter_case(1, 1, 22, 22, torch.float32)
    done("ada")


def done(what):
    """One log line per family, so a sanitizer report or a stop at the time limit shows where it was."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize cases: {what} done (backend {BACKEND})", flush=True)


def main(backends):
    global BACKEND
    for name in backends or ["cuda"]:
        BACKEND = "cpu" if name == "cuda" and DEVICE == "cpu" else name
        run_cases()


if __name__ == "__main__":
    main(sys.argv[1:])
