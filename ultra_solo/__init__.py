"""ultra-solo: SOLOv2 instance segmentation trained, validated and served by Ultralytics' own machinery."""

from __future__ import annotations

__version__ = "0.4.4"
__all__ = ["SOLO", "__version__"]


def __getattr__(name: str):
    """Import `SOLO` lazily so that `ultra-solo help` and `ultra-solo version` do not load torch."""
    if name == "SOLO":
        from ultra_solo.models.solov2.model import SOLO

        return SOLO
    raise AttributeError(f"module 'ultra_solo' has no attribute '{name}'")
