"""kling_nb: the %%kling cell magic for kling-video-o1 video generation in Jupyter."""

from .errors import KlingError, SpecError

__all__ = ["KlingError", "SpecError"]
__version__ = "0.1.0"
