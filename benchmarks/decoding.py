"""Decoding settings of a trained SOLO model: mask mAP, AP75 and Boundary AP per setting, nothing retrained.

Each variant changes keys of the model YAML's `solo` block that only decoding reads (`mask_thr`, the probability above
which an upsampled pixel belongs to a mask; `maskness_power`, how strongly a mask's mean probability rescores it;
`sigma`, `kernel`, `nms_pre`; `vote_thr`, mask voting). `--reference` changes the first row, the reference of `--folds`
(e.g. `vote_thr=0`: without mask voting). Every variant is scored with one validator configuration (compare's:
`overlap_mask=True`, native-resolution masks for faster-coco-eval), so the table says whether other settings than the
trained model's rank and cut its masks better.

Run (a minute or two per variant on 2 CPU cores at imgsz 320):
    YOLO_OFFLINE=1 python benchmarks/decoding.py --model runs/compare/exp/yolo11n-solo/weights/best.pt \\
        --variants mask_thr=0.4 mask_thr=0.6 maskness_power=2 --folds 2
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
from ultralytics.data.utils import check_det_dataset

from ultra_solo import SOLO
from ultra_solo.compare.cocoeval import (
    METRICS,
    COCOScores,
    coco_scores_from_file,
    ground_truth,
    val_dataset,
    with_coco_predictions,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DECODING_KEYS = ("mask_thr", "maskness_power", "sigma", "kernel", "nms_pre", "vote_thr")


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
        default=[
            variant(v)
            for v in ("mask_thr=0.4", "mask_thr=0.6", "maskness_power=1", "maskness_power=4", "maskness_power=8")
        ],
        help="decoding settings to score besides the model's own, e.g. mask_thr=0.4 maskness_power=2,mask_thr=0.45",
    )
    parser.add_argument(
        "--reference",
        type=variant,
        default={},
        help="decoding keys the first row, the reference of --folds, changes from the model's own, e.g. vote_thr=0",
    )
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--project", default="/tmp/decoding", help="folder for the validation runs")
    parser.add_argument("--folds", type=int, default=0, help="choose a variant on K-1 folds, score it on the K-th")
    parser.add_argument("--select", default="coco_mask_mAP50-95", choices=list(METRICS), help="what --folds maximises")
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0], help="seeds of random splits into folds")
    return parser.parse_args()


def held_out(scores: dict[str, COCOScores], folds: int, select: str, seed: int) -> list[str]:
    """Table rows: per fold, the variant with the best `select` on the other folds, scored on the fold itself against
    the first variant (the model's own decoding) on the same images."""
    names = list(scores)
    n = scores[names[0]].n_images
    fold_of = np.random.default_rng(seed).permutation(n) % folds  # (N,) fold of each image
    keys = ("coco_mask_mAP50-95", "coco_mask_mAP75", "boundary_mAP50-95")
    header = " | ".join(f"{k}: own -> chosen" for k in keys)
    rows = [f"| fold (images) | chosen on the other folds by {select} | {header} |", "|---|---|" + "---|" * len(keys)]
    for f in range(folds):
        tune, test = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        chosen = max(names, key=lambda name: scores[name].metrics(tune)[select])
        own, best = scores[names[0]].metrics(test), scores[chosen].metrics(test)
        cells = " | ".join(f"{own[k]:.3f} -> {best[k]:.3f} ({best[k] - own[k]:+.3f})" for k in keys)
        rows.append(f"| {f} ({len(test)}) | {chosen} | {cells} |")
    return rows


def main() -> None:
    """Validate the model with its own decoding and every variant; print the table."""
    args = parse_args()
    info = check_det_dataset(args.data)
    gt = ground_truth(val_dataset(info), info["names"])
    model = SOLO(args.model)
    validator = with_coco_predictions(model._smart_load("validator"))
    solo = model.model.yaml["solo"]
    own = {k: solo[k] for k in DECODING_KEYS if k in solo}
    print(f"\n{args.model} (its decoding: {own}) on {args.data}, imgsz {args.imgsz}\n")
    rows = [
        "| decoding | mask mAP50 | mask mAP50-95 | COCO mask mAP50-95 | COCO AP75 | boundary mAP50 | Boundary AP |",
        "|---|---|---|---|---|---|---|",
    ]
    scores = {}
    for i, changes in enumerate([args.reference, *args.variants]):
        model.model.yaml["solo"] = {**solo, **changes}
        metrics = model.val(
            validator=validator, data=args.data, imgsz=args.imgsz, batch=args.batch, overlap_mask=True, plots=False,
            project=args.project, name=f"variant{i}", exist_ok=True, verbose=False,
        )  # fmt: skip
        name = ", ".join(f"{k} {v}" for k, v in changes.items()) or "the model's own"
        scores[name] = coco_scores_from_file(gt, metrics.save_dir / "predictions.json")
        coco = scores[name].metrics()
        keys = ("coco_mask_mAP50-95", "coco_mask_mAP75", "boundary_mAP50", "boundary_mAP50-95")
        values = [metrics.seg.map50, metrics.seg.map, *(coco[k] for k in keys)]
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    model.model.yaml["solo"] = solo
    print("\n".join(rows))
    for seed in args.split_seeds if args.folds > 1 else []:
        print(f"\nHeld out ({args.folds} folds, split seed {seed}):\n")
        print("\n".join(held_out(scores, args.folds, args.select, seed)))


if __name__ == "__main__":
    main()
