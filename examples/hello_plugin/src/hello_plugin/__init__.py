"""An example Agent PM plugin distributed as its own package."""

from .plugin import HelloPlugin

__all__ = ["HelloPlugin"]
