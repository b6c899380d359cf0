"""capsim's version: one constant, a leaf every layer may import (pyproject.toml says the same)."""

__version__ = "0.2.0"
