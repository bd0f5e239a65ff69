"""Compressors (int8 quantisation, structured pruning, distillation) applied as an ordered chain.

This package holds the registry the compressors register into (``COMPRESSORS``, keyed by name);
the compressors themselves and ``compose_`` arrive with issue #3. Until then every benchmark row
has ``chain = "none"``.
"""

from sidenet.registry import Registry

COMPRESSORS: Registry[object] = Registry("compressor")

__all__ = ["COMPRESSORS"]
