"""spoofwatch: streaming, real-time detection of synthetic speech."""

__version__ = "0.1.0"

__all__ = ["__version__"]
