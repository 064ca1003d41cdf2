"""predictions.jpg: the same validation images in rows, ground truth then each model's masks, at original resolution.

A model's panel shows, for every ground-truth object, the model's prediction that overlaps it best (highest mask IoU,
scores down to `MATCH_CONF`), drawn with its own score, and the ground truth's outlines in white: what a reader needs to
compare masks and their boundaries, also when a short training leaves every score under predict's default conf.

Shape shorthand in this module:
    G: ground-truth objects of an image; n: a model's predictions; H, W: the original image's height and width
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.engine.results import Results

CELL_HEIGHT = 360  # pixels of each picture in the grid
TITLE_HEIGHT = 28
MATCH_CONF = 0.001  # lowest score a best match may have (the validator's conf)
MATCH_MAX_DET = 100  # predictions per image considered for the matches


def ground_truth_result(label: dict, names: dict[int, str]) -> Results:
    """A `Results` holding one image's ground-truth polygons as masks (original resolution) and their boxes."""
    image = cv2.imread(label["im_file"])
    h, w = image.shape[:2]
    masks, boxes = [], []
    for cls, segment in zip(label["cls"].reshape(-1), label["segments"]):
        xy = segment * [w, h]
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [xy.round().astype(np.int32)], 1)
        masks.append(mask)
        boxes.append([*xy.min(0), *xy.max(0), 1.0, cls])
    masks = torch.from_numpy(np.stack(masks)) if masks else None
    boxes = torch.tensor(boxes, dtype=torch.float32).view(-1, 6)
    return Results(image, path=label["im_file"], names=names, boxes=boxes, masks=masks)


def best_matches(gt: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every ground-truth mask (G, H, W) the index (G,) of the prediction (n, H, W) with the highest mask IoU, and
    that IoU (G,); (0,) and (0,) when there are no predictions."""
    if not len(pred) or not len(gt):
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    g, p = gt.flatten(1).float(), pred.flatten(1).float()  # (G, HW), (n, HW)
    inter = g @ p.T  # (G, n)
    iou = inter / (g.sum(1, keepdim=True) + p.sum(1) - inter).clamp_min(1)
    best_iou, best = iou.max(1)
    return best, best_iou


def outlined(picture: np.ndarray, gt: torch.Tensor) -> np.ndarray:
    """The picture with every ground-truth mask's outline drawn in white."""
    for mask in gt.numpy().astype(np.uint8):
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, (255, 255, 255), max(1, round(picture.shape[0] / CELL_HEIGHT)))
    return picture


def match_panel(result: Results, gt: torch.Tensor) -> tuple[np.ndarray, str]:
    """The best match of every ground-truth object drawn with its score on the image, the outlines, and a title note."""
    pred = result.masks.data.bool().cpu() if result.masks is not None else torch.zeros(0, *gt.shape[1:], dtype=bool)
    best, iou = best_matches(gt, pred)
    picture = result[best.unique()].plot() if len(best) else result[[]].plot()
    note = f"mean best IoU {iou.mean():.2f}" if len(iou) else ("no objects" if not len(gt) else "no predictions")
    return outlined(picture, gt), note


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """The picture scaled to `CELL_HEIGHT` with a title bar above it."""
    scale = CELL_HEIGHT / picture.shape[0]
    picture = cv2.resize(picture, (round(picture.shape[1] * scale), CELL_HEIGHT), interpolation=cv2.INTER_AREA)
    bar = np.full((TITLE_HEIGHT, picture.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (6, TITLE_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack((bar, picture))


def write_predictions(file: Path, models: dict[str, object], labels: list[dict], names: dict[int, str], **predict):
    """Write the grid: one row per image (`labels`: Ultralytics dataset labels), ground truth then every model.

    Args:
        file (Path): Output JPEG.
        models (dict[str, object]): Column title -> YOLO or SOLO model.
        labels (list[dict]): Dataset labels of the images to show (`im_file`, `cls`, `segments`).
        names (dict[int, str]): Class names.
        **predict: Predict arguments shared by every model (imgsz, device, ...); masks come at the original
            resolution (`retina_masks=True`), scores down to `MATCH_CONF`.
    """
    rows = []
    for label in labels:
        truth = ground_truth_result(label, names)
        gt = truth.masks.data.bool() if truth.masks is not None else torch.zeros(0, *truth.orig_shape, dtype=bool)
        cells = [titled(truth.plot(conf=False), "ground truth")]
        for title, model in models.items():
            args = {**predict, "conf": MATCH_CONF, "max_det": MATCH_MAX_DET, "retina_masks": True}
            result = model.predict(label["im_file"], verbose=False, save=False, **args)[0]
            picture, note = match_panel(result, gt)
            cells.append(titled(picture, f"{title}: {note}"))
        rows.append(np.hstack(cells))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(file), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
