"""anchorline: the command line of Anchorline, one write path for an agent loop's messages."""

from .app import main

__all__ = ["main"]
