"""Speed measurements taken in the comparing process: inference latency per image and training images/s."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

STAGES = ("preprocess", "inference", "postprocess")


def inference_latency(models: dict, images: list[Path], imgsz: int, repeats: int = 3, **kwargs) -> dict[str, dict]:
    """Median per-image latency (ms) of each predict stage and of their sum, for several models measured side by side.

    The models take turns on every image (A, B, A, B, ...), so a machine that slows down or speeds up during the
    measurement (other load, CPU steal, clock changes) affects every model alike and their ratios hold.

    Args:
        models (dict): YOLO or SOLO models by name.
        images (list[Path]): Images, predicted one at a time (batch 1), as a deployed model would.
        imgsz (int): Inference size.
        repeats (int): Timed passes over `images`.
        **kwargs: Further predict arguments (e.g. `device`).

    Returns:
        (dict[str, dict]): For each model name, median ms per image for each stage and for `total`.
    """
    args = dict(imgsz=imgsz, batch=1, verbose=False, save=False, **kwargs)
    for model in models.values():
        model.predict(images[0], **args)  # warm-up: model setup, first-call allocations
    speeds = {name: [] for name in models}
    for _ in range(repeats):
        for image in images:
            for name, model in models.items():
                speeds[name] += [r.speed for r in model.predict(image, **args)]
    return {name: medians(x) for name, x in speeds.items()}


def medians(speeds: list[dict[str, float]]) -> dict[str, float]:
    """Median of each stage and of the per-image totals."""
    out = {s: statistics.median(x[s] for x in speeds) for s in STAGES}
    out["total"] = statistics.median(sum(x[s] for s in STAGES) for x in speeds)
    return out


class TrainSpeed:
    """Training-loop timer attached as callbacks; excludes validation and checkpointing. Persists to a json file."""

    def __init__(self, file: Path):
        """Resume totals from `file` (a resumed run adds to its earlier epochs)."""
        self.file = file
        self.totals = json.loads(file.read_text()) if file.is_file() else {"seconds": 0.0, "images": 0}
        self.start = 0.0

    def attach(self, model) -> None:
        """Register the callbacks on a YOLO or SOLO model before `train()`."""
        model.add_callback("on_train_epoch_start", self.epoch_start)
        model.add_callback("on_train_epoch_end", self.epoch_end)

    def epoch_start(self, trainer) -> None:
        """Start the epoch's clock."""
        self.start = time.perf_counter()

    def epoch_end(self, trainer) -> None:
        """Add the epoch's loop time and images, and save."""
        self.totals["seconds"] += time.perf_counter() - self.start
        self.totals["images"] += len(trainer.train_loader.dataset)
        self.file.write_text(json.dumps(self.totals))

    @staticmethod
    def images_per_second(file: Path) -> float:
        """Training images/s recorded in `file` (0 when nothing was recorded)."""
        totals = json.loads(file.read_text()) if file.is_file() else {}
        return totals["images"] / totals["seconds"] if totals.get("seconds") else 0.0
