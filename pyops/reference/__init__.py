"""Plain-PyTorch reference implementations: the definition every kernel is tested against."""

from pyops.reference import ada
from pyops.reference.pointrend import point_sample

__all__ = ["ada", "point_sample"]
