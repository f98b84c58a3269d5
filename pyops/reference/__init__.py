"""Plain-PyTorch reference implementations: the definition every kernel is tested against."""

from pyops.reference.linformer import linformer_attention, linformer_project
from pyops.reference.pointrend import point_sample

__all__ = ["linformer_attention", "linformer_project", "point_sample"]
