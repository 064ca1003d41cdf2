"""Mask threshold of a trained SOLO model: mask mAP, AP75 and Boundary AP at several `mask_thr`, nothing retrained.

`mask_thr` (the model YAML's `solo` block) is the probability above which an upsampled mask pixel belongs to the mask.
Every threshold is scored with one validator configuration (compare's: `overlap_mask=True`, native-resolution masks for
faster-coco-eval), so the table says whether another threshold than the trained model's gives more precise masks.

Run (a minute per threshold on 2 CPU cores at imgsz 320):
    YOLO_OFFLINE=1 python benchmarks/mask_threshold.py --model runs/compare/exp/yolo11n-solo/weights/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset

from ultra_solo import SOLO
from ultra_solo.compare.cocoeval import coco_metrics_from_file, ground_truth, with_coco_predictions

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained SOLO checkpoint")
    parser.add_argument("--data", default=str(DATASETS / "package-seg-small" / "data.yaml"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.45, 0.5, 0.55, 0.6])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--project", default="/tmp/mask_threshold", help="folder for the validation runs")
    return parser.parse_args()


def main() -> None:
    """Validate the model at every threshold and print the table."""
    args = parse_args()
    info = check_det_dataset(args.data)
    gt = ground_truth(YOLODataset(img_path=info["val"], data=info, task="segment", augment=False), info["names"])
    model = SOLO(args.model)
    validator = with_coco_predictions(model._smart_load("validator"))
    trained = model.model.yaml["solo"].get("mask_thr", 0.5)
    print(f"\n{args.model} (its YAML: mask_thr {trained}) on {args.data}, imgsz {args.imgsz}\n")
    rows = [
        "| mask_thr | mask mAP50 | mask mAP50-95 | COCO mask AP75 | boundary mAP50 | Boundary AP |",
        "|---|---|---|---|---|---|",
    ]
    for thr in args.thresholds:
        model.model.yaml["solo"]["mask_thr"] = thr
        metrics = model.val(
            validator=validator, data=args.data, imgsz=args.imgsz, batch=args.batch, overlap_mask=True, plots=False,
            project=args.project, name=f"thr{thr}", exist_ok=True, verbose=False,
        )  # fmt: skip
        coco = coco_metrics_from_file(gt, metrics.save_dir / "predictions.json")
        values = [metrics.seg.map50, metrics.seg.map, coco["coco_mask_mAP75"], coco["boundary_mAP50"]]
        rows.append(f"| {thr} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {coco['boundary_mAP50-95']:.3f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
