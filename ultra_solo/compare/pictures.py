"""predictions.jpg: the same validation images in rows, ground truth then each model's masks, at original resolution."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.engine.results import Results

CELL_HEIGHT = 360  # pixels of each picture in the grid
TITLE_HEIGHT = 28


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
        **predict: Predict arguments shared by every model (imgsz, conf, device, ...); masks come at the original
            resolution (`retina_masks=True`).
    """
    rows = []
    for label in labels:
        cells = [titled(ground_truth_result(label, names).plot(conf=False), "ground truth")]
        for title, model in models.items():
            result = model.predict(label["im_file"], retina_masks=True, verbose=False, save=False, **predict)[0]
            cells.append(titled(result.plot(), title))
        rows.append(np.hstack(cells))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(file), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
