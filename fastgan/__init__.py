"""fastgan: a compiled training engine for the DCGAN family of GANs."""

__version__ = "0.1.0"

from fastgan.errors import FastganError

__all__ = ["FastganError", "__version__"]
