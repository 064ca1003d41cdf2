"""Instances and positive grid cells per head level on real datasets, at several input sizes.

Each dataset's validation split (train for coco8-seg's 4 images too) is letterboxed to each imgsz by Ultralytics' own
loader (no augmentation, square inputs), and the model's own criterion assigns targets (`SOLOv2Loss.targets`). A level
without positives never learns: with scale ranges relative to imgsz, every level of the shipped families gets instances
at every size, where MMDetection's fixed pixel ranges left the coarse levels empty at small sizes.

Run (about a minute on 2 CPU cores):
    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 python benchmarks/levels.py --models yolo11n-solo.yaml solov2-n.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from ultralytics.cfg import get_cfg
from ultralytics.data import build_dataloader, build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils import IterableSimpleNamespace

from ultra_solo.models.solov2.network import SOLOv2Model

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolo11n-solo.yaml", "solov2-n.yaml"], help="model YAMLs")
    names = ["coco8-seg", "coco128-seg", "package-seg-small"]
    parser.add_argument("--data", nargs="+", default=[str(DATASETS / n / "data.yaml") for n in names])
    parser.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    return parser.parse_args()


def level_counts(model: SOLOv2Model, data: str, imgsz: int) -> tuple[list[int], list[int]]:
    """Instances and positive cells per level over a dataset's validation split at one input size."""
    cfg = get_cfg(overrides={"imgsz": imgsz, "task": "segment", "overlap_mask": False, "rect": False})
    info = check_det_dataset(data)
    dataset = build_yolo_dataset(cfg, info["val"], 16, info, mode="val", stride=32)
    loader = build_dataloader(dataset, 16, workers=0, shuffle=False)
    crit = model.init_criterion()
    sizes = crit.layout.level_sizes((imgsz, imgsz))  # square inputs (rect=False)
    instances, cells = [0] * len(sizes), [0] * len(sizes)
    for batch in loader:
        batch["img"] = batch["img"].float()
        _, _, assigned = crit.targets(batch, tuple(d // 4 for d in batch["img"].shape[2:]))
        for i, level in enumerate(assigned.split(sizes, 1)):  # (B, S_h * S_w) instance index per cell
            cells[i] += int((level >= 0).sum())
            instances[i] += sum(len(torch.unique(img[img >= 0])) for img in level)
    return instances, cells


def main() -> None:
    """Print one row per model, dataset and size."""
    args = parse_args()
    print(f"{'model':<20}{'dataset':<20}{'imgsz':>6}  instances per level / positive cells per level")
    for spec in args.models:
        model = SOLOv2Model(spec, verbose=False)
        model.args = IterableSimpleNamespace(overlap_mask=False)
        for data in args.data:
            for imgsz in args.imgsz:
                instances, cells = level_counts(model, data, imgsz)
                name = Path(data).parent.name
                print(f"{spec:<20}{name:<20}{imgsz:>6}  {instances} / {cells}")


if __name__ == "__main__":
    main()
