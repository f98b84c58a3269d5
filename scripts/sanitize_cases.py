"""Small cases of every CUDA kernel, for `compute-sanitizer --tool memcheck` (scripts/gpu_check.sh).

Each case runs the CUDA backend forward and backward on odd sizes, both layouts, several dtypes
and out-of-range / non-finite coordinates, and compares with the reference, so a kernel that
reads or writes out of bounds is caught by the sanitizer and a wrong one by the comparison.
"""

import torch

import pyops
from pyops import reference


def case(N, C, H, W, P, dtype, channels_last, align_corners):
    x = torch.randn(N, C, H, W, device="cuda", dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    c = torch.rand(N, P, 2, device="cuda") * 1.4 - 0.2
    c[0, :3] = torch.tensor([[float("nan"), 0.5], [float("inf"), 0.1], [1e30, -1e30]], device="cuda")
    x.requires_grad_()
    c.requires_grad_()
    out = pyops.point_sample(x, c, align_corners, backend="cuda")
    g = torch.randn_like(out)
    gx, gc = torch.autograd.grad(out, (x, c), g)
    want = reference.point_sample(x, c, align_corners)
    wx, wc = torch.autograd.grad(want, (x, c), g)
    tol = dict(atol=1e-2, rtol=1e-2, equal_nan=True)
    torch.testing.assert_close(out, want, **tol)
    torch.testing.assert_close(gx, wx, **tol)
    torch.testing.assert_close(gc, wc, **tol)


def ada_case(B, C, H, W, dtype, channels_last, geom=True, color=True):
    """pyops.ada.geometric_color on the CUDA backend, forward and adjoint, against the reference."""
    from pyops.reference import ada as ada_ref

    x = torch.rand(B, C, H, W, device="cuda", dtype=dtype) * 2 - 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    theta = torch.rand(B, device="cuda") * 6.28
    s = torch.exp2(torch.randn(B, device="cuda") * 0.5)
    G = pyops.ada.rotate2d(theta) @ pyops.ada.scale2d(s, 1 / s) @ pyops.ada.translate2d(torch.randn(B, device="cuda") * 3, torch.randn(B, device="cuda"))
    C_ = torch.eye(4, device="cuda").repeat(B, 1, 1) + 0.2 * torch.randn(B, 4, 4, device="cuda")
    G, C_ = (G if geom else None), (C_ if color else None)
    x.requires_grad_()
    out = pyops.ada.geometric_color(x, G, C_, backend="cuda")
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

    x = (torch.rand(B, C, H, W, device="cuda") * 2 - 1).to(dtype).requires_grad_()
    h = torch.exp2(torch.randn(B, 4, device="cuda")) @ ada_ref.filter_bank(torch.float32, "cuda")
    sigma, noise = torch.rand(B, device="cuda") * 0.2, torch.randn(B, C, H, W, device="cuda")
    boxes = torch.cat([torch.rand(B, 2, device="cuda"), torch.full((B, 2), 0.5, device="cuda")], 1)
    out = pyops.ada.filter_noise_cutout(x, h, sigma, noise, boxes, backend="cuda")
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    xd = x.detach().double().requires_grad_()
    want = ada_ref.cutout(ada_ref.add_noise(ada_ref.filter_taps(xd, h.double()), sigma.double(), noise.double()), boxes.double())
    (wx,) = torch.autograd.grad(want, xd, g.double())
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gx.double(), wx, atol=2e-2, rtol=2e-2)


def main():
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for channels_last in (False, True):
            for align_corners in (False, True):
                case(3, 37, 7, 11, 53, dtype, channels_last, align_corners)
    case(2, 1, 1, 1, 5, torch.float32, False, False)
    case(1, 300, 5, 3, 1000, torch.float32, True, False)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        ada_case(3, 3, 13, 9, dtype, channels_last=False)
    ada_case(2, 1, 7, 16, torch.float32, channels_last=True)
    ada_case(2, 3, 1, 5, torch.float32, channels_last=False)
    ada_case(2, 3, 8, 8, torch.float32, channels_last=False, geom=False)
    ada_case(2, 3, 8, 8, torch.float32, channels_last=False, color=False)
    for dtype in (torch.float32, torch.float16, torch.float64):
        ada_filter_case(2, 3, 23, 30, dtype)
    ada_filter_case(1, 1, 22, 22, torch.float32)
    torch.cuda.synchronize()
    print("sanitize cases done")


if __name__ == "__main__":
    main()
