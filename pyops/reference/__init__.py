"""Plain-PyTorch reference implementations: the definition every kernel is tested against."""

from pyops.reference.pointrend import point_sample

__all__ = ["point_sample"]
