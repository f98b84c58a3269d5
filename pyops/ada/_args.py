"""Argument checks shared by the ADA functions, the pipeline and the Triton host glue."""

from __future__ import annotations

import torch

from pyops import _checks

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---- argument checks --------------------------------------------------------------------------


def _check_images(fn: str, images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"pyops.{fn}: images must be a tensor, got {_checks.describe(images)}")
    if images.dim() != 4:
        raise ValueError(f"pyops.{fn}: images must be a 4-D (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    if images.dtype not in _FLOATS:
        raise TypeError(f"pyops.{fn}: images must be a floating-point tensor, got {images.dtype}")
    if images.shape[1] not in (1, 3):
        raise ValueError(
            f"pyops.{fn}: images must have 1 or 3 channels (the colour transforms are defined for grey "
            f"and RGB), got {images.shape[1]} channels (shape {tuple(images.shape)})"
        )
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"pyops.{fn}: images must have non-empty H and W, got shape {tuple(images.shape)}")


def _check_param(fn: str, name: str, t, shape: tuple, images: torch.Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"pyops.{fn}: {name} must be a tensor or None, got {type(t).__name__}")
    want = tuple(images.shape[0] if s == "B" else s for s in shape)
    if tuple(t.shape) != want:
        pretty = "(" + ", ".join(str(s) for s in shape) + ")"
        raise ValueError(f"pyops.{fn}: {name} must have shape {pretty} = {want}, got {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"pyops.{fn}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.device != images.device:
        raise ValueError(f"pyops.{fn}: {name} is on {t.device} but images is on {images.device}")
