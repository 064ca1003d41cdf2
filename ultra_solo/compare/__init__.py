"""Side-by-side comparison of YOLO-seg and SOLO models: one argument set, one evaluator configuration, one report."""

from ultra_solo.compare.compare import compare

__all__ = ["compare"]
