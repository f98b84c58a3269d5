"""Reference of the StyleGAN2-ADA augmentation stages (Karras et al., NeurIPS 2020), written
as the plain chain that ``shared/specs/ada.md`` describes, one stage after another:

geometric: reflect pad -> 2x upsample (sym6) -> bilinear resample through ``G_inv`` -> 2x
downsample (flipped sym6) and crop; colour: ``C`` (4x4) on the RGB values; filtering: a 4-band
filter bank from sym2 with per-sample gains; additive Gaussian noise; cutout.

Every kernel of :mod:`pyops.ada` is tested against these functions. They compute in float32
(float64 for float64 images) and return the images' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Published wavelet taps (PyWavelets' decomposition low-pass filters).
SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
SYM6 = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]
GEOM_PAD = 3  # len(SYM6) // 4
FILTER_PAD = 21  # half the 43 taps of the filter bank
EXPECTED_POWER = [10 / 13, 1 / 13, 1 / 13, 1 / 13]


def geom_filter(dtype=torch.float64, device=None) -> torch.Tensor:
    """sym6 normalised to sum 1 (12 taps): the up- and downsampling filter of the geometric stage."""
    f = torch.tensor(SYM6, dtype=torch.float64)
    return (f / f.sum()).to(dtype=dtype, device=device)


def _full_convolve(a: list[float], b: list[float]) -> list[float]:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def filter_bank(dtype=torch.float64, device=None) -> torch.Tensor:
    """The (4, 43) bank of band-pass filters of the ``imgfilter`` augmentation, built from sym2:
    start from the unit impulse in band 0, then three times dilate every band by 2, convolve
    with the half-band low-pass ``lo2`` and add the high-pass ``hi2`` centred in band i."""
    lo = SYM2
    hi = [v * (-1) ** n for n, v in enumerate(lo)]
    lo2 = [v / 2 for v in _full_convolve(lo, lo[::-1])]
    hi2 = [v / 2 for v in _full_convolve(hi, hi[::-1])]
    bank = [[1.0], [0.0], [0.0], [0.0]]
    for i in range(1, 4):
        dilated = []
        for row in bank:
            d = [0.0] * (2 * len(row) - 1)
            d[::2] = row
            dilated.append(d)
        bank = [_full_convolve(row, lo2) for row in dilated]
        width = len(bank[i])
        start = (width - len(hi2)) // 2
        for j, v in enumerate(hi2):
            bank[i][start + j] += v
    return torch.tensor(bank, dtype=torch.float64).to(dtype=dtype, device=device)


def _opmath(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ---- geometric stage -------------------------------------------------------------------------


def geometric_margin(G_inv: torch.Tensor, H: int, W: int) -> tuple[int, int, int, int]:
    """Reflect padding (left, top, right, bottom) of the whole batch: the image corners mapped by
    every ``G_inv``, their largest extent outside the image plus ``2 * GEOM_PAD``, clamped to the
    image size (a reflection cannot be longer), rounded up. Reads the value on the host."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=G_inv.dtype, device=G_inv.device)
    mapped = G_inv[:, :2, :] @ corners.t()  # (B, 2, 4)
    ext = mapped.permute(1, 0, 2).reshape(2, -1)
    margin = torch.cat([-ext, ext]).amax(dim=1)  # x0, y0, x1, y1
    margin = margin + torch.tensor([2 * GEOM_PAD - cx, 2 * GEOM_PAD - cy] * 2, dtype=G_inv.dtype, device=G_inv.device)
    limit = torch.tensor([W - 1, H - 1] * 2, dtype=G_inv.dtype, device=G_inv.device)
    margin = torch.minimum(margin.clamp(min=0), limit).ceil()
    return tuple(int(v) for v in margin.tolist())


def _upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Zero insertion then the separable filter ``f`` with gain 2 per axis (4 in all)."""
    B, C, H, W = x.shape
    z = x.new_zeros(B, C, 2 * H, 2 * W)
    z[:, :, ::2, ::2] = x
    k = len(f)
    p0, p1 = (k + 1) // 2, (k - 2) // 2  # 6, 5: output sample j sits at input position (j - 0.5) / 2
    z = F.pad(z, [p0, p1, p0, p1])
    fk = (f * 2).flip(0).to(x.dtype)  # a convolution with f is a correlation with f flipped
    z = F.conv2d(z.reshape(B * C, 1, *z.shape[2:]), fk.view(1, 1, 1, k))
    z = F.conv2d(z, fk.view(1, 1, k, 1))
    return z.reshape(B, C, 2 * H, 2 * W)


def _downsample2x_crop(v: torch.Tensor, f: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Correlation with ``f`` (the flipped filter of the upsampling convolution), every second
    sample, starting one sample in: output o reads grid samples 2 o + 1 ... 2 o + 12."""
    B, C = v.shape[:2]
    k = len(f)
    fk = f.to(v.dtype)
    y = v[:, :, 1 : 2 * H + k - 1, 1 : 2 * W + k - 1].reshape(B * C, 1, 2 * H + k - 2, 2 * W + k - 2)
    y = F.conv2d(y, fk.view(1, 1, 1, k), stride=(1, 2))
    y = F.conv2d(y, fk.view(1, 1, k, 1), stride=(2, 1))
    return y.reshape(B, C, H, W)


def geometric(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """The geometric stage for per-sample inverse matrices ``G_inv`` (B, 3, 3) that map output
    pixel coordinates to input pixel coordinates, both centred on the image centre."""
    B, C, H, W = images.shape
    dt = _opmath(images)
    x = images.to(dt)
    G = G_inv.to(dt)
    f = geom_filter(dt, images.device)
    mx0, my0, mx1, my1 = geometric_margin(G, H, W)
    x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
    u = _upsample2x(x, f)
    Hu, Wu = u.shape[2:]
    Hg, Wg = 2 * H + 4 * GEOM_PAD, 2 * W + 4 * GEOM_PAD  # the resampling grid, (2H + 12) x (2W + 12)

    def translate(tx, ty):
        return torch.tensor([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=dt, device=images.device)

    def scale(sx, sy):
        return torch.tensor([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=dt, device=images.device)

    # Output grid (centred, in grid pixels) -> upsampled padded image (centred, in its pixels).
    G = translate((mx0 - mx1) / 2, (my0 - my1) / 2) @ G  # padding moves the image centre
    G = scale(2, 2) @ G @ scale(1 / 2, 1 / 2)  # both sides are 2x finer grids
    G = translate(-0.5, -0.5) @ G @ translate(0.5, 0.5)  # the 2x grids are offset by half a pixel
    # To affine_grid's normalised coordinates ([-1, 1] across each image, align_corners=False).
    G = scale(2 / Wu, 2 / Hu) @ G @ scale(Wg / 2, Hg / 2)
    grid = F.affine_grid(G[:, :2, :], [B, C, Hg, Wg], align_corners=False)
    v = F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _downsample2x_crop(v, f, H, W).to(images.dtype)


# ---- colour stage ----------------------------------------------------------------------------


def color(images: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The colour stage for per-sample 4x4 matrices ``C`` (colour in -> colour out, homogeneous):
    RGB ``y = C[:3, :3] x + C[:3, 3]``; one channel: ``C`` becomes the mean of its first three
    rows and ``y = x * sum(C[:3]) + C[3]``."""
    B, ch, H, W = images.shape
    dt = _opmath(images)
    x = images.to(dt).reshape(B, ch, H * W)
    Cm = C.to(dt)
    if ch == 3:
        y = Cm[:, :3, :3] @ x + Cm[:, :3, 3:]
    elif ch == 1:
        Cm = Cm[:, :3, :].mean(dim=1, keepdim=True)
        y = x * Cm[:, :, :3].sum(dim=2, keepdim=True) + Cm[:, :, 3:]
    else:
        raise ValueError(f"pyops.reference.ada.color: images must have 1 or 3 channels, got {ch}")
    return y.reshape(B, ch, H, W).to(images.dtype)


# ---- filtering, noise, cutout ----------------------------------------------------------------


def imgfilter(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Per-sample band gains ``gains`` (B, 4) turn the filter bank into one 43-tap filter per
    sample, applied separably (rows, then columns) after a 21-pixel reflect pad."""
    dt = _opmath(images)
    return filter_taps(images, gains.to(dt) @ filter_bank(dt, images.device))


def filter_taps(images: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per-sample 43-tap filters ``h`` (B, 43) applied separably after a 21-pixel reflect pad."""
    B, C, H, W = images.shape
    if B == 0:  # an empty batch: nothing to filter (a grouped conv needs groups >= 1)
        return images.clone()
    dt = _opmath(images)
    h = h.to(dt)
    k = h.shape[1]
    x = F.pad(images.to(dt), [FILTER_PAD] * 4, mode="reflect")
    x = x.reshape(1, B * C, H + 2 * FILTER_PAD, W + 2 * FILTER_PAD)
    w = h.repeat_interleave(C, dim=0)  # one filter per (sample, channel) group
    x = F.conv2d(x, w.view(B * C, 1, 1, k), groups=B * C)
    x = F.conv2d(x, w.view(B * C, 1, k, 1), groups=B * C)
    return x.reshape(B, C, H, W).to(images.dtype)


def add_noise(images: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``images + noise * sigma`` with per-sample ``sigma`` (B,) and a standard normal field ``noise``."""
    dt = _opmath(images)
    return (images.to(dt) + noise.to(dt) * sigma.to(dt).view(-1, 1, 1, 1)).to(images.dtype)


def cutout(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero a box per sample. ``boxes`` (B, 4) = (centre x, centre y, width, height) as fractions
    of the image; pixel (x, y) is zeroed where ``|(x + 0.5) / W - cx| < width / 2`` and
    ``|(y + 0.5) / H - cy| < height / 2``."""
    B, C, H, W = images.shape
    dt = _opmath(images)
    b = boxes.to(dt)
    xs = (torch.arange(W, dtype=dt, device=images.device) + 0.5) / W
    ys = (torch.arange(H, dtype=dt, device=images.device) + 0.5) / H
    inside_x = (xs.view(1, 1, W) - b[:, 0].view(B, 1, 1)).abs() < b[:, 2].view(B, 1, 1) / 2
    inside_y = (ys.view(1, H, 1) - b[:, 1].view(B, 1, 1)).abs() < b[:, 3].view(B, 1, 1) / 2
    keep = (~(inside_x & inside_y)).to(dt).unsqueeze(1)
    return (images.to(dt) * keep).to(images.dtype)


def augment(
    images: torch.Tensor,
    G_inv: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    filter_gains: torch.Tensor | None = None,
    noise_sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cutout_boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole pipeline for explicit per-sample parameters, in the order geometric, colour,
    filtering, noise, cutout; a stage whose parameter is ``None`` is skipped."""
    x = images
    if G_inv is not None:
        x = geometric(x, G_inv)
    if C is not None:
        x = color(x, C)
    if filter_gains is not None:
        x = imgfilter(x, filter_gains)
    if noise_sigma is not None:
        x = add_noise(x, noise_sigma, noise)
    if cutout_boxes is not None:
        x = cutout(x, cutout_boxes)
    return x


__all__ = [
    "EXPECTED_POWER",
    "SYM2",
    "SYM6",
    "add_noise",
    "augment",
    "color",
    "cutout",
    "filter_bank",
    "filter_taps",
    "geom_filter",
    "geometric",
    "geometric_margin",
    "imgfilter",
]
