"""tuneforge runner: recipe → model/data → train → run directory."""

__version__ = "0.1.0"
