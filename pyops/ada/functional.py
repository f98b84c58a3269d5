"""The ADA stages for explicit per-sample parameters: :func:`geometric_color`,
:func:`filter_noise_cutout` and the whole pipeline :func:`augment`."""

from __future__ import annotations

import torch

from pyops import _backend
from pyops._budget import budget
from pyops._interop import accepts_arrays
from pyops.ada._args import _check_images, _check_param
from pyops.ada._ops import _FILTER, _GEOM_COLOR
from pyops.reference import ada as _ref


def _check_affine(fn: str, G_inv) -> None:
    """The third row of every G_inv is [0, 0, 1]: the geometric stage is affine (a projective row
    would be neither applied nor refused). Checked where that costs no host synchronisation: CPU
    tensors in eager mode; on a GPU the call stays sync-free and the row is not read."""
    if G_inv is None or G_inv.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if isinstance(G_inv, torch._subclasses.fake_tensor.FakeTensor):
        return
    bad = (G_inv[:, 2, :] != torch.tensor([0.0, 0.0, 1.0], dtype=G_inv.dtype)).any(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        row = [round(float(v), 6) for v in G_inv[i, 2]]
        raise ValueError(
            f"pyops.{fn}: G_inv must be affine, every third row [0, 0, 1] (perspective is not "
            f"supported), got {row} for sample {i}"
        )


# ---- functional API ---------------------------------------------------------------------------


@budget(forward=1, backward=1)
@accepts_arrays
def geometric_color(
    images: torch.Tensor,
    G_inv: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """The fused geometric + colour stage for explicit per-sample parameters.

    Args:
        images: (B, C, H, W) with C = 1 or 3, any float dtype (computed in float32, float64 for
            float64 images), any strides.
        G_inv: (B, 3, 3) inverse geometric matrices: output pixel -> input pixel, coordinates
            centred on the image centre; ``None`` skips the geometric stage. Affine: every third
            row must be [0, 0, 1] (a ValueError for CPU tensors; not read on a GPU, where
            checking would synchronise the host).
        C: (B, 4, 4) colour matrices (colour in -> colour out, homogeneous); ``None`` skips it.
        backend: ``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"`` or ``None`` (automatic).
            The Triton kernels compute in float32 (float64 images included).

    Returns:
        (B, C, H, W) contiguous, in ``images.dtype``. Differentiable with respect to ``images``
        (any order, deterministic); not with respect to ``G_inv`` or ``C``.

    The geometric stage is the chain of :func:`pyops.reference.ada.geometric` (reflect pad,
    2x sym6 upsampling, bilinear resampling, 2x downsampling), computed per output pixel; the
    reflect margin is the batch-wide one of the reference, computed on the device.
    """
    _check_images("ada.geometric_color", images)
    _check_param("ada.geometric_color", "G_inv", G_inv, ("B", 3, 3), images)
    _check_affine("ada.geometric_color", G_inv)
    _check_param("ada.geometric_color", "C", C, ("B", 4, 4), images)
    name = _backend.resolve("ada_geom_color", backend, images.device)
    if name == "reference":
        x = images
        if G_inv is not None:
            x = _ref.geometric(x, G_inv)
        if C is not None:
            x = _ref.color(x, C)
        return x.contiguous()
    return _GEOM_COLOR.kernel(name)(images, G_inv, C)


@budget(forward=1, backward=1)
@accepts_arrays
def filter_noise_cutout(
    images: torch.Tensor,
    filters: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """The fused filtering + noise + cutout stage for explicit per-sample parameters.

    Args:
        images: (B, C, H, W), C = 1 or 3, any float dtype (computed in float32, float64 for
            float64 images); H, W >= 22 when filtering.
        filters: (B, 43) per-sample filter taps (``filter_gains @ pyops.reference.ada.filter_bank()``),
            applied separably after a 21-pixel reflect pad; ``None``: no filtering.
        sigma, noise: (B,) noise strengths and a (B, C, H, W) standard normal field, added as
            ``noise * sigma``; both or neither.
        boxes: (B, 4) cutout boxes (centre x, centre y, width, height; fractions of the image).
        backend: as in :func:`geometric_color`.

    Returns (B, C, H, W) contiguous in ``images.dtype``; differentiable to any order with respect
    to ``images`` (the backward is the adjoint, a deterministic gather).
    """
    fn = "ada.filter_noise_cutout"
    _check_images(fn, images)
    _check_param(fn, "filters", filters, ("B", 43), images)
    _check_param(fn, "sigma", sigma, ("B",), images)
    _check_param(fn, "noise", noise, tuple(["B", *images.shape[1:]]), images)
    _check_param(fn, "boxes", boxes, ("B", 4), images)
    if (sigma is None) != (noise is None):
        raise ValueError(f"pyops.{fn}: sigma and noise must be given together")
    if filters is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise ValueError(
            f"pyops.{fn}: filtering needs H and W of at least {_ref.FILTER_PAD + 1} (a {_ref.FILTER_PAD}-pixel "
            f"reflect pad), got shape {tuple(images.shape)}"
        )
    name = _backend.resolve("ada_filter_noise_cutout", backend, images.device)
    if name == "reference":
        x = images
        if filters is not None:
            x = _ref.filter_taps(x, filters)
        if sigma is not None:
            x = _ref.add_noise(x, sigma, noise)
        if boxes is not None:
            x = _ref.cutout(x, boxes)
        return x.contiguous()
    return _FILTER.kernel(name)(images, filters, sigma, noise, boxes)


@budget(forward=2, backward=2, note="the two fused stages")
@accepts_arrays
def augment(
    images: torch.Tensor,
    *,
    G_inv: torch.Tensor | None = None,
    C: torch.Tensor | None = None,
    filter_gains: torch.Tensor | None = None,
    noise_sigma: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cutout_boxes: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """The whole ADA pipeline for explicit per-sample parameters; ``None`` skips a stage.

    Order: geometric (``G_inv`` (B, 3, 3)), colour (``C`` (B, 4, 4)), filtering
    (``filter_gains`` (B, 4): gains of the 4 bands of :func:`pyops.reference.ada.filter_bank`;
    needs H, W >= 22 for its 21-pixel reflect pad), additive noise (``noise_sigma`` (B,) times
    ``noise`` (B, C, H, W), a standard normal field; ``noise`` defaults to ``torch.randn``),
    cutout (``cutout_boxes`` (B, 4) = centre x, centre y, width, height as fractions of the image).
    The stages run as two fused ops (:func:`geometric_color`, :func:`filter_noise_cutout`) on
    ``backend``.
    """
    fn = "ada.augment"
    _check_images(fn, images)
    _check_param(fn, "filter_gains", filter_gains, ("B", 4), images)
    _check_param(fn, "noise_sigma", noise_sigma, ("B",), images)
    _check_param(fn, "noise", noise, tuple(["B", *images.shape[1:]]), images)
    _check_param(fn, "cutout_boxes", cutout_boxes, ("B", 4), images)
    _check_param(fn, "G_inv", G_inv, ("B", 3, 3), images)
    _check_affine(fn, G_inv)
    if filter_gains is not None and min(images.shape[2:]) <= _ref.FILTER_PAD:
        raise ValueError(
            f"pyops.{fn}: filtering needs H and W of at least {_ref.FILTER_PAD + 1} (a {_ref.FILTER_PAD}-pixel "
            f"reflect pad), got shape {tuple(images.shape)}"
        )
    if noise is not None and noise_sigma is None:
        raise ValueError(f"pyops.{fn}: noise was given without noise_sigma")
    x = images
    if G_inv is not None or C is not None:
        x = geometric_color(x, G_inv, C, backend=backend)
    if filter_gains is not None or noise_sigma is not None or cutout_boxes is not None:
        filters = None
        if filter_gains is not None:
            dt = torch.float64 if images.dtype == torch.float64 else torch.float32
            filters = filter_gains.to(dt) @ _ref.filter_bank(dt, images.device)
        if noise_sigma is not None and noise is None:
            noise = torch.randn(x.shape, device=x.device, dtype=torch.float32)
        x = filter_noise_cutout(x, filters, noise_sigma, noise, cutout_boxes, backend=backend)
    return x
