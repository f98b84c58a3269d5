"""The ADA augmentation pipeline :class:`AugmentPipe`: per-augmentation probability multipliers,
strengths and presets, and the drawing of per-sample parameters."""

from __future__ import annotations

import math

import torch

from pyops import _checks, _scripting
from pyops._budget import budget
from pyops.ada._args import _check_images
from pyops.ada.functional import augment
from pyops.ada.matrices import rotate2d, rotate3d, scale2d, scale3d, translate2d, translate3d
from pyops.reference import ada as _ref

# Probability multipliers (all default 0) and strengths with their defaults.
MULTIPLIERS = (
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout",
)
STRENGTHS = dict(
    xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
    brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0,
    imgfilter_bands=(1.0, 1.0, 1.0, 1.0), imgfilter_std=1.0, noise_std=0.1, cutout_size=0.5,
)
_GEOM = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM_PRESET = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR_PRESET = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM_PRESET,
    "color": _COLOR_PRESET,
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": {**_BLIT, **_GEOM_PRESET},
    "bgc": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET},
    "bgcf": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM_PRESET, **_COLOR_PRESET, "imgfilter": 1, "noise": 1, "cutout": 1},
}


def _constant(values, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant vector made on ``device`` by fills (``torch.tensor(..., device=cuda)``
    would copy from the host and synchronise)."""
    out = torch.empty(len(values), device=device, dtype=dtype)
    for i, value in enumerate(values):
        out[i].fill_(value)
    return out


class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline: ``AugmentPipe(xflip=1, rotate90=1, ...)`` or
    ``AugmentPipe.from_preset("bgc")``; ``pipe.p`` (a buffer) is the augmentation strength. It
    starts at 1, as in NVIDIA's ``AugmentPipe`` (whose training loop then sets it, to 0 for an ADA
    run): pass ``p=0`` for a pipe that an :class:`AdaController` drives up from nothing.

    Calling it on (B, C, H, W) images (C = 1 or 3, values in [-1, 1], any float dtype) draws
    per-sample parameters with :meth:`sample_params` and applies :func:`augment`. Each
    augmentation fires for a sample with probability ``multiplier * p``. Differentiable to any
    order with respect to the images.
    """

    def __init__(self, *, p: float = 1.0, backend: str | None = None, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(MULTIPLIERS) - set(STRENGTHS)
        if unknown:
            raise TypeError(
                f"pyops.AugmentPipe: unknown argument(s) {sorted(unknown)}; expected multipliers "
                f"{MULTIPLIERS} or strengths {tuple(STRENGTHS)}"
            )
        fn = "AugmentPipe"
        for name in MULTIPLIERS:  # probability multipliers: finite, >= 0
            setattr(self, name, _checks.number(fn, name, kwargs.get(name, 0.0), min=0))
        for name, default in STRENGTHS.items():  # strengths: finite, >= 0 (cutout_size a fraction)
            value = kwargs.get(name, default)
            if name == "imgfilter_bands":
                if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 4:
                    _checks.fail(fn, f"imgfilter_bands must be 4 numbers (band multipliers), got {value!r}")
                value = tuple(_checks.number(fn, "imgfilter_bands", v, min=0) for v in value)
            else:
                value = _checks.number(fn, name, value, min=0, max=1 if name == "cutout_size" else None)
            setattr(self, name, value)
        if isinstance(p, torch.Tensor) and p.numel() == 1:  # a 0-dim strength, e.g. another pipe's p
            p = float(p)
        p = _checks.number(fn, "p", p, min=0, max=1)
        self.backend = backend
        self.register_buffer("p", torch.tensor(p))

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> AugmentPipe:
        """A pipeline with the multipliers of preset ``name`` (blit, geom, color, filter, noise,
        cutout, bg, bgc, bgcf, bgcfn, bgcfnc); ``kwargs`` override or add arguments."""
        if name not in PRESETS:
            raise ValueError(f"pyops.AugmentPipe.from_preset: unknown preset {name!r}; expected one of {tuple(PRESETS)}")
        return cls(**{**PRESETS[name], **kwargs})

    def extra_repr(self) -> str:
        on = ", ".join(f"{n}={getattr(self, n):g}" for n in MULTIPLIERS if getattr(self, n) > 0)
        return f"p={float(self.p):.4f}, {on}"

    @torch.no_grad()
    def sample_params(self, images: torch.Tensor, debug_percentile: float | None = None) -> dict:
        """Per-sample parameters for ``images``, drawn from the torch generator of its device in
        a fixed order (geometric, colour, filter, noise, cutout; per augmentation the value, then
        the gate). Keys are the arguments of :func:`augment`; a stage with every multiplier 0 is
        absent (skipped), so it costs nothing and draws nothing. Float32 under autocast too.

        ``debug_percentile`` in [0, 1] (NVIDIA's debugging aid): every enabled augmentation is
        applied to every sample, at the value of that percentile of its distribution (uniform
        ranges at ``u``, normal draws at ``erfinv(2u - 1)``, the noise strength at ``erfinv(u)``,
        the post-rotation at 0, cutout centred at ``(u, u)``), as NVIDIA's ``AugmentPipe`` does;
        the noise image itself stays random."""
        if debug_percentile is not None:
            debug_percentile = _checks.number("AugmentPipe", "debug_percentile", debug_percentile, min=0, max=1)
        with torch.autocast(images.device.type, enabled=False):
            return self._draw_params(images, debug_percentile)

    def _draw_params(self, images: torch.Tensor, debug_percentile: float | None) -> dict:
        B, ch, H, W = images.shape
        dev = images.device
        dt = torch.float32
        p = self.p.to(device=dev, dtype=dt)
        u = None if debug_percentile is None else torch.full((), debug_percentile, device=dev, dtype=dt)

        def pin(value, fixed):
            """``value``, or in debug mode the percentile value ``fixed(u)`` for every sample."""
            return value if u is None else torch.zeros_like(value) + fixed(u)

        def normal(u):  # NVIDIA's percentile of a normal draw
            return torch.erfinv(u * 2 - 1)

        def rand(*shape):
            return torch.rand(shape, device=dev, dtype=dt)

        def randn(*shape):
            return torch.randn(shape, device=dev, dtype=dt)

        def gate(value, prob, identity):
            return torch.where(rand(B) < prob, value, torch.full_like(value, identity))

        out: dict = {}
        if any(getattr(self, n) > 0 for n in _GEOM):
            G = torch.eye(3, device=dev, dtype=dt).repeat(B, 1, 1)
            zero = torch.zeros(B, device=dev, dtype=dt)
            if self.xflip > 0:
                i = pin(gate(torch.floor(rand(B) * 2), self.xflip * p, 0.0), lambda u: torch.floor(u * 2))
                G = G @ scale2d(1 - 2 * i, zero + 1)  # scale_inv(1 - 2i, 1) is its own inverse
            if self.rotate90 > 0:
                i = pin(gate(torch.floor(rand(B) * 4), self.rotate90 * p, 0.0), lambda u: torch.floor(u * 4))
                G = G @ rotate2d(math.pi / 2 * i)  # rotate_inv(-pi/2 i)
            if self.xint > 0:
                t = (rand(B, 2) * 2 - 1) * self.xint_max
                t = torch.where((rand(B) < self.xint * p)[:, None], t, torch.zeros_like(t))
                t = pin(t, lambda u: (u * 2 - 1) * self.xint_max)
                G = G @ translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H))
            if self.scale > 0:
                s = gate(torch.exp2(randn(B) * self.scale_std), self.scale * p, 1.0)
                s = pin(s, lambda u: torch.exp2(normal(u) * self.scale_std))
                G = G @ scale2d(1 / s, 1 / s)
            p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
            if self.rotate > 0:
                theta = gate((rand(B) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0)
                theta = pin(theta, lambda u: (u * 2 - 1) * math.pi * self.rotate_max)
                G = G @ rotate2d(theta)  # rotate_inv(-theta)
            if self.aniso > 0:
                s = gate(torch.exp2(randn(B) * self.aniso_std), self.aniso * p, 1.0)
                s = pin(s, lambda u: torch.exp2(normal(u) * self.aniso_std))
                G = G @ scale2d(1 / s, s)
            if self.rotate > 0:
                theta = pin(gate((rand(B) * 2 - 1) * math.pi * self.rotate_max, p_rot, 0.0), lambda u: 0.0)
                G = G @ rotate2d(theta)
            if self.xfrac > 0:
                t = randn(B, 2) * self.xfrac_std
                t = torch.where((rand(B) < self.xfrac * p)[:, None], t, torch.zeros_like(t))
                t = pin(t, lambda u: normal(u) * self.xfrac_std)
                G = G @ translate2d(-t[:, 0] * W, -t[:, 1] * H)
            out["G_inv"] = G
        if any(getattr(self, n) > 0 for n in _COLOR):
            C = torch.eye(4, device=dev, dtype=dt).repeat(B, 1, 1)
            v = _constant([1 / math.sqrt(3)] * 3 + [0.0], dev, dt)  # the luma axis
            vv = torch.outer(v, v)
            eye = torch.eye(4, device=dev, dtype=dt)
            if self.brightness > 0:
                b = gate(randn(B) * self.brightness_std, self.brightness * p, 0.0)
                b = pin(b, lambda u: normal(u) * self.brightness_std)
                C = translate3d(b, b, b) @ C
            if self.contrast > 0:
                c = gate(torch.exp2(randn(B) * self.contrast_std), self.contrast * p, 1.0)
                c = pin(c, lambda u: torch.exp2(normal(u) * self.contrast_std))
                C = scale3d(c, c, c) @ C
            if self.lumaflip > 0:
                i = pin(gate(torch.floor(rand(B) * 2), self.lumaflip * p, 0.0), lambda u: torch.floor(u * 2))
                C = (eye - 2 * vv * i.view(B, 1, 1)) @ C
            if self.hue > 0 and ch > 1:
                theta = gate((rand(B) * 2 - 1) * math.pi * self.hue_max, self.hue * p, 0.0)
                theta = pin(theta, lambda u: (u * 2 - 1) * math.pi * self.hue_max)
                C = rotate3d(v, theta) @ C
            if self.saturation > 0 and ch > 1:
                s = gate(torch.exp2(randn(B) * self.saturation_std), self.saturation * p, 1.0)
                s = pin(s, lambda u: torch.exp2(normal(u) * self.saturation_std))
                C = (vv + (eye - vv) * s.view(B, 1, 1)) @ C
            out["C"] = C
        if self.imgfilter > 0:
            power = _constant(_ref.EXPECTED_POWER, dev, dt)
            g = torch.ones(B, 4, device=dev, dtype=dt)
            for i, band in enumerate(self.imgfilter_bands):
                t_i = gate(torch.exp2(randn(B) * self.imgfilter_std), self.imgfilter * p * band, 1.0)
                t_i = pin(t_i, lambda u, band=band: torch.exp2(normal(u) * self.imgfilter_std) if band > 0 else 1.0)
                t = torch.ones(B, 4, device=dev, dtype=dt)
                t[:, i] = t_i
                t = t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()
                g = g * t
            out["filter_gains"] = g
        if self.noise > 0:
            sigma = gate(randn(B).abs() * self.noise_std, self.noise * p, 0.0)
            sigma = pin(sigma, lambda u: torch.erfinv(u) * self.noise_std)
            out["noise_sigma"] = sigma
            out["noise"] = randn(B, ch, H, W)
        if self.cutout > 0:
            size = gate(torch.full((B,), self.cutout_size, device=dev, dtype=dt), self.cutout * p, 0.0)
            centre = pin(rand(B, 2), lambda u: u)
            size = pin(size, lambda u: self.cutout_size)
            out["cutout_boxes"] = torch.stack([centre[:, 0], centre[:, 1], size, size], dim=1)
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # NVIDIA's AugmentPipe also saves its fixed filters (Hz_geom: sym6, Hz_fbank: the sym2 band
        # filters); pyops has them as constants: check them and drop them, so its checkpoints load strictly
        for name, expected in (("Hz_geom", _ref.geom_filter), ("Hz_fbank", _ref.filter_bank)):
            saved = state_dict.pop(prefix + name, None)
            if saved is None:
                continue
            want = expected(torch.float64)
            if tuple(saved.shape) != tuple(want.shape) or not torch.allclose(saved.double().cpu(), want, rtol=0, atol=1e-6):
                error_msgs.append(
                    f"pyops.AugmentPipe: {prefix + name} in the checkpoint is not the filter NVIDIA's AugmentPipe "
                    f"saves (expected shape {tuple(want.shape)}), got shape {tuple(saved.shape)} with other values"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def __prepare_scriptable__(self):
        """Called by ``torch.jit.script`` (also on submodules): refuse with the reason and the
        alternatives, instead of TorchScript's compiler error."""
        raise NotImplementedError(_scripting.AUGMENT_PIPE_ERROR)

    @budget(forward=400, backward=2, note="no host sync; parameter sampling still dispatches ~350 small ops (#17)")
    def forward(self, images: torch.Tensor, debug_percentile: float | None = None) -> torch.Tensor:
        """Augment ``images``; ``debug_percentile``: see :meth:`sample_params`."""
        _check_images("AugmentPipe", images)
        return augment(images, **self.sample_params(images, debug_percentile), backend=self.backend)
