"""natter: the command line, the process launcher, the Python client SDK and the bench tool."""

from shared import __version__

__all__ = ["__version__"]
