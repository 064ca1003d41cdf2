"""Do a model's scores rank its precise masks first? Score against mask IoU of the predictions a compare folder scored.

AP is a ranking metric: at IoU 0.75 and at the boundary it rewards a model whose better masks score higher. For every
model's `predictions.json` (the validator's own, what `ultra-solo compare` evaluates), each image's 100 highest-scored
predictions are matched to the ground truth by mask IoU (pycocotools, original-image pixels), and the table gives:
- the Spearman rank correlation of score and IoU over the predictions that match an object (IoU >= 0.5);
- over the objects that several predictions match, how often the highest-scored of them is the most precise;
- the mean IoU of the matching predictions.

Run (about a minute per model on 2 CPU cores for package-seg-small's 188 validation images):
    YOLO_OFFLINE=1 python benchmarks/ranking.py --folder runs/compare/scratch \\
        --data ../shared/datasets/package-seg-small/data.yaml
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy.stats import spearmanr
from ultralytics.data.utils import check_det_dataset

from ultra_solo.compare.cocoeval import ground_truth, val_dataset


def ground_truth_rles(data: str) -> dict[str, list]:
    """RLE masks of the validation objects, per image file name."""
    info = check_det_dataset(data)
    gt = ground_truth(val_dataset(info), info["names"])
    rles = defaultdict(list)
    for ann in gt["annotations"]:
        image = gt["images"][ann["image_id"]]
        polygons = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
        rles[image["file_name"]].append(mask_utils.merge(polygons))
    return rles


def ranking(predictions: list[dict], objects: dict[str, list], per_image: int = 100) -> dict[str, float]:
    """The table's columns for one model's COCO predictions (RLE masks) and the objects' RLEs per image."""
    by_image = defaultdict(list)
    for p in predictions:
        by_image[p["file_name"]].append(p)
    scores, ious, top_is_best = [], [], []
    for name, preds in by_image.items():
        if not objects.get(name):
            continue
        preds = sorted(preds, key=lambda p: -p["score"])[:per_image]
        rles = [{**p["segmentation"], "counts": p["segmentation"]["counts"].encode()} for p in preds]
        iou = np.asarray(mask_utils.iou(rles, objects[name], [0] * len(objects[name])))  # (predictions, objects)
        scores += [p["score"] for p in preds]
        ious += iou.max(1).tolist()
        for column in iou.T:  # the predictions matching one object, highest score first
            matched = column[column >= 0.5]
            if len(matched) > 1:
                top_is_best.append(matched[0] >= matched.max())
    scores, ious = np.array(scores), np.array(ious)
    match = ious >= 0.5
    return {
        "matches": int(match.sum()),
        "spearman": float(spearmanr(scores[match], ious[match]).statistic),
        "top_is_best": float(np.mean(top_is_best)),
        "objects": len(top_is_best),
        "mean_iou": float(ious[match].mean()),
    }


def main() -> None:
    """Print the table for every model of the folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="an `ultra-solo compare` folder (its val/*/predictions.json)")
    parser.add_argument("--data", required=True, help="the dataset YAML the folder was scored on")
    args = parser.parse_args()
    objects = ground_truth_rles(args.data)
    print("| model | predictions matching an object | Spearman(score, IoU) | highest score most precise | mean IoU |")
    print("|---|---|---|---|---|")
    for file in sorted(Path(args.folder).glob("val/*/predictions.json")):
        r = ranking(json.loads(file.read_text()), objects)
        print(
            f"| {file.parent.name} | {r['matches']} | {r['spearman']:.3f} | {r['top_is_best']:.3f} of {r['objects']} "
            f"objects | {r['mean_iou']:.3f} |"
        )


if __name__ == "__main__":
    main()
