"""Decoding settings of a trained SOLO model: mask mAP, AP75 and Boundary AP per setting, nothing retrained.

Each variant changes keys of the model YAML's `solo` block that only decoding reads (`mask_thr`, the probability above
which an upsampled pixel belongs to a mask; `maskness_power`, how strongly a mask's mean probability rescores it;
`sigma`, `kernel`, `nms_pre`). Every variant is scored with one validator configuration (compare's: `overlap_mask=True`,
native-resolution masks for faster-coco-eval), so the table says whether other settings than the trained model's rank
and cut its masks better.

Run (a minute or two per variant on 2 CPU cores at imgsz 320):
    YOLO_OFFLINE=1 python benchmarks/decoding.py --model runs/compare/exp/yolo11n-solo/weights/best.pt \\
        --variants mask_thr=0.4 mask_thr=0.6 maskness_power=2
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from ultralytics.data import YOLODataset
from ultralytics.data.utils import check_det_dataset

from ultra_solo import SOLO
from ultra_solo.compare.cocoeval import coco_metrics_from_file, ground_truth, with_coco_predictions

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DECODING_KEYS = ("mask_thr", "maskness_power", "sigma", "kernel", "nms_pre")


def variant(text: str) -> dict:
    """`key=value[,key=value]` -> {key: value}, only keys decoding reads."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in DECODING_KEYS:
            raise argparse.ArgumentTypeError(f"'{key}' is not a decoding key: one of {DECODING_KEYS}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # e.g. kernel=linear
    return out


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained SOLO checkpoint")
    parser.add_argument("--data", default=str(DATASETS / "package-seg-small" / "data.yaml"))
    parser.add_argument(
        "--variants",
        type=variant,
        nargs="+",
        default=[variant(v) for v in ("mask_thr=0.4", "mask_thr=0.6", "maskness_power=0.5", "maskness_power=2")],
        help="decoding settings to score besides the model's own, e.g. mask_thr=0.4 maskness_power=2,mask_thr=0.45",
    )
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--project", default="/tmp/decoding", help="folder for the validation runs")
    return parser.parse_args()


def main() -> None:
    """Validate the model with its own decoding and every variant; print the table."""
    args = parse_args()
    info = check_det_dataset(args.data)
    gt = ground_truth(YOLODataset(img_path=info["val"], data=info, task="segment", augment=False), info["names"])
    model = SOLO(args.model)
    validator = with_coco_predictions(model._smart_load("validator"))
    solo = model.model.yaml["solo"]
    own = {k: solo[k] for k in DECODING_KEYS if k in solo}
    print(f"\n{args.model} (its decoding: {own}) on {args.data}, imgsz {args.imgsz}\n")
    rows = [
        "| decoding | mask mAP50 | mask mAP50-95 | COCO mask mAP50-95 | COCO AP75 | boundary mAP50 | Boundary AP |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, changes in enumerate([{}, *args.variants]):
        model.model.yaml["solo"] = {**solo, **changes}
        metrics = model.val(
            validator=validator, data=args.data, imgsz=args.imgsz, batch=args.batch, overlap_mask=True, plots=False,
            project=args.project, name=f"variant{i}", exist_ok=True, verbose=False,
        )  # fmt: skip
        coco = coco_metrics_from_file(gt, metrics.save_dir / "predictions.json")
        keys = ("coco_mask_mAP50-95", "coco_mask_mAP75", "boundary_mAP50", "boundary_mAP50-95")
        values = [metrics.seg.map50, metrics.seg.map, *(coco[k] for k in keys)]
        name = ", ".join(f"{k} {v}" for k, v in changes.items()) or "the model's own"
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    model.model.yaml["solo"] = solo
    print("\n".join(rows))


if __name__ == "__main__":
    main()
