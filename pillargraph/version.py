"""The package version, in a module of its own so that any layer can read it without importing the package."""
from __future__ import annotations

__all__ = ["__version__"]

#: The version of pillargraph (also ``pyproject.toml``'s); written into checkpoints and reports.
__version__ = "0.1.0"
