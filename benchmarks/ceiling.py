"""What a mask loss's ground truth lets a model reach: the native-resolution AP of reproducing it exactly.

A model trained to reproduce its ground truth at the mask stride can at best score what that ground truth scores once
it is decoded as validation decodes (upsampled bilinearly to the input, thresholded at 0.5, scaled to the image) and
compared with the polygons by faster-coco-eval. This script makes every validation object's mask each way a loss
could see it, decodes it so, and prints the COCO mask AP and Boundary AP that a perfect model of each kind would get
(every object found once, score 1):

- binary at stride 4: Ultralytics' training masks at `mask_ratio` 4 (SOLO's mask loss by default, YOLO's proto loss);
- the same cropped by the object's box at input resolution, as YOLO-seg's decoding crops its masks;
- binary at stride 2 (`loss_stride: 2`);
- coverage at stride 4 (`coverage_targets: true`): Ultralytics' masks at input resolution (`mask_ratio` 1) averaged
  over each 4 x 4 block, so a pixel holds the fraction of it the object covers;
- exact coverage at stride 4: the same from the polygon itself, 8 x 8 samples per input pixel (what is left).

Run (about a minute on 2 CPU cores):
    YOLO_OFFLINE=1 python benchmarks/ceiling.py --data ../shared/datasets/package-seg-small/data.yaml --imgsz 320
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from ultralytics.data.utils import check_det_dataset, polygon2mask
from ultralytics.utils import ops

from ultra_solo.compare.cocoeval import class_names, coco_metrics, ground_truth, val_dataset
from ultra_solo.models.solov2.resample import upsample_probs
from ultra_solo.utils.masks import coverage_masks

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
COLUMNS = {  # printed column -> METRICS key
    "COCO mask mAP50-95": "coco_mask_mAP50-95",
    "AP75": "coco_mask_mAP75",
    "small": "mask_mAP_small",
    "medium": "mask_mAP_medium",
    "large": "mask_mAP_large",
    "Boundary AP": "boundary_mAP50-95",
}


def exact_coverage(xy: np.ndarray, frame: tuple[int, int], stride: int, samples: int = 8) -> torch.Tensor:
    """Covered fraction of each stride x stride block of `frame` (h, w) by the polygon xy (n, 2) in input pixels, where
    pixel i spans [i, i + 1): the polygon filled at `samples` points per pixel and side, then averaged."""
    h, w = frame
    fine = np.zeros((h * samples, w * samples), np.uint8)
    points = np.round((xy * samples - 0.5) * 16).astype(np.int32)  # sample centres at (k + 0.5) / samples
    cv2.fillPoly(fine, [points], 1, shift=4)
    return coverage_masks(torch.from_numpy(fine)[None], (h // stride, w // stride))[0]


def stride_maps(xy: np.ndarray, frame: tuple[int, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Each kind of ground truth of one polygon xy (n, 2) in an input frame (h, w): (map at its stride, xyxy box (4,)
    to crop the decoded mask with, or None)."""
    flat = [xy.reshape(-1)]
    binary4 = torch.from_numpy(polygon2mask(frame, flat, downsample_ratio=4)).float()
    full = torch.from_numpy(polygon2mask(frame, flat, downsample_ratio=1))
    box = torch.from_numpy(np.concatenate((xy.min(0), xy.max(0)))).float()
    return {
        "binary, stride 4 (Ultralytics' training masks)": (binary4, None),
        "binary, stride 4, cropped by the box (YOLO-seg's decoding)": (binary4, box),
        "binary, stride 2 (loss_stride: 2)": (
            torch.from_numpy(polygon2mask(frame, flat, downsample_ratio=2)).float(),
            None,
        ),
        "coverage, stride 4 (coverage_targets: true)": (
            coverage_masks(full[None], (frame[0] // 4, frame[1] // 4))[0],
            None,
        ),
        "exact coverage, stride 4 (8 x 8 samples per pixel)": (exact_coverage(xy, frame, 4), None),
    }


def decoded(small: torch.Tensor, box: torch.Tensor | None, frame: tuple[int, int], shape, ratio_pad) -> dict:
    """A COCO RLE of a stride map decoded as validation decodes: bilinear to the input frame, > 0.5, (cropped by `box`
    with Ultralytics' `ops.crop_mask`, as YOLO-seg crops), scaled to the image (`ops.scale_masks`, as Ultralytics'
    validator scales masks for its JSON)."""
    mask = upsample_probs(small[None], frame)[0] > 0.5
    if box is not None:
        mask = ops.crop_mask(mask[None].float(), box[None])[0] > 0
    native = ops.scale_masks(mask[None, None].float(), shape, ratio_pad=ratio_pad)[0, 0] > 0.5
    rle = mask_utils.encode(np.asfortranarray(native.numpy().astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def perfect_predictions(dataset, imgsz: int) -> dict[str, list[dict]]:
    """Per kind of ground truth, one score-1 prediction per validation object, decoded as validation decodes."""
    out: dict[str, list[dict]] = {}
    for label in dataset.labels:
        h, w = label["shape"]
        r = imgsz / max(h, w)
        frame = (math.ceil(h * r / 4) * 4, math.ceil(w * r / 4) * 4)  # the resized image, padded to the mask stride
        ratio_pad = ((r, r), (0, 0))
        for cls, segment in zip(label["cls"].reshape(-1), label["segments"]):
            xy = segment * [w * r, h * r]  # input pixels
            for kind, (small, box) in stride_maps(xy, frame).items():
                out.setdefault(kind, []).append(
                    {
                        "file_name": Path(label["im_file"]).name,
                        "category_id": int(cls) + 1,
                        "score": 1.0,
                        "bbox": [0.0, 0.0, 1.0, 1.0],
                        "segmentation": decoded(small, box, frame, (h, w), ratio_pad),
                    }
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATASETS / "package-seg-small" / "data.yaml"))
    parser.add_argument("--imgsz", type=int, default=320)
    args = parser.parse_args()
    data = check_det_dataset(args.data)
    dataset = val_dataset(data)
    gt = ground_truth(dataset, class_names(data))
    n = len(gt["annotations"])
    print(f"{args.data}, imgsz {args.imgsz}: a model reproducing its ground truth exactly ({n} objects)")
    print("| ground truth the loss sees | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for kind, predictions in perfect_predictions(dataset, args.imgsz).items():
        m = coco_metrics(gt, predictions)
        cells = ["" if m[k] is None else f"{m[k]:.3f}" for k in COLUMNS.values()]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
