"""Accuracy on non-square inputs: the same trained models on a square validation set and on it padded to 3:2 and 2:3.

Every validation image is padded with gray (114) bars, centred, to a wider (3:2) and a taller (2:3) image, its polygon
labels moved with it; objects then fill 2/3 of the letterboxed input's longer side they filled before. A third set pads
each image to a square as large (1:1): objects shrink as much, the input stays square, so the step from 1:1 to 3:2 or
2:3 is the cost of the shape alone and the step from square to 1:1 that of smaller objects. Validation is
Ultralytics' (`rect` batches: a 3:2 image is validated at 320 x 224 for imgsz 320), the same for every model, so the
table shows how much each model loses on non-square inputs, the images most users have (4:3 photos, 16:9 video).

Run (a few minutes on 2 CPU cores):
    YOLO_OFFLINE=1 python benchmarks/aspect.py --models runs/compare/exp/yolo11n-seg/weights/best.pt \
        runs/compare/exp/yolo11n-solo/weights/best.pt --out /tmp/aspect
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from ultralytics.data.utils import check_det_dataset, img2label_paths
from ultralytics.utils import YAML

from ultra_solo.compare.compare import model_class

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ASPECTS = {"1:1": (1, 1), "3:2": (3, 2), "2:3": (2, 3)}  # name -> (width, height) ratio of the padded image


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="trained checkpoints (YOLO-seg or SOLO)")
    parser.add_argument("--data", default=str(DATASETS / "package-seg-small" / "data.yaml"))
    parser.add_argument("--out", required=True, help="folder for the padded validation sets")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    return parser.parse_args()


def padded_label(line: str, scale: np.ndarray, shift: np.ndarray) -> str:
    """A YOLO-seg label row (class x1 y1 x2 y2 ...) with its normalised points scaled and shifted."""
    cls, *coords = line.split()
    points = np.asarray(coords, dtype=np.float64).reshape(-1, 2) * scale + shift
    return " ".join([cls, *(f"{v:.6f}" for v in points.flatten())])


def canvas_size(w: int, h: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the padded image: the smallest canvas of that aspect holding the image; for 1:1 the square
    with the longer side of the 3:2 and 2:3 canvases, so objects shrink as much as there and only the shape differs."""
    if aspect == (1, 1):
        side = max(max(canvas_size(w, h, a)) for a in ((3, 2), (2, 3)))
        return side, side
    side = max(w / aspect[0], h / aspect[1])
    return round(side * aspect[0]), round(side * aspect[1])


def pad_split(images: list[Path], aspect: tuple[int, int], out: Path) -> Path:
    """Write every image padded to `aspect` (width, height) with its labels into `out`; return its images folder."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for image, label in zip(images, img2label_paths([str(p) for p in images])):
        im = cv2.imread(str(image))
        h, w = im.shape[:2]
        cw, ch = canvas_size(w, h, aspect)
        left, top = (cw - w) // 2, (ch - h) // 2
        canvas = np.full((ch, cw, 3), 114, dtype=np.uint8)
        canvas[top : top + h, left : left + w] = im
        cv2.imwrite(str(out / "images" / image.name), canvas)
        rows = Path(label).read_text().splitlines() if Path(label).is_file() else []
        scale, shift = np.array([w / cw, h / ch]), np.array([left / cw, top / ch])
        text = "\n".join(padded_label(r, scale, shift) for r in rows if r.strip())
        (out / "labels" / f"{image.stem}.txt").write_text(text)
    return out / "images"


def datasets(data: str, out: Path) -> dict[str, str]:
    """The original data YAML and one YAML per padded aspect (validation split only), by aspect name."""
    info = check_det_dataset(data)
    val = info["val"] if isinstance(info["val"], list) else [info["val"]]
    images = sorted(p for v in val for p in Path(v).rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    result = {"square": data}
    for name, aspect in ASPECTS.items():
        folder = out / name.replace(":", "x")
        split = pad_split(images, aspect, folder)
        yaml = folder / "data.yaml"
        YAML.save(yaml, {"path": str(folder), "train": str(split), "val": str(split), "names": info["names"]})
        result[name] = str(yaml)
    return result


def main() -> None:
    """Validate every model on every aspect and print the table of mask mAP50-95 and its drop."""
    args = parse_args()
    sets = datasets(args.data, Path(args.out).resolve())
    rows = []
    for spec in args.models:
        model = model_class(spec)(spec)
        scores = {}
        for name, yaml in sets.items():
            metrics = model.val(
                data=yaml, imgsz=args.imgsz, batch=args.batch, overlap_mask=True, plots=False, verbose=False
            )
            scores[name] = metrics.seg.map
        drops = [f"{scores[n]:.3f} ({scores[n] / scores['square'] - 1:+.0%})" for n in ASPECTS]
        shape = [f"{scores[n] / scores['1:1'] - 1:+.0%}" for n in ASPECTS if n != "1:1"]
        rows.append(f"| {spec} | {scores['square']:.3f} | " + " | ".join(drops + shape) + " |")
    print(f"\nmask mAP50-95 at imgsz {args.imgsz} on {args.data} (padded: change from square; shape: from 1:1)\n")
    shapes = [n for n in ASPECTS if n != "1:1"]
    columns = [f"padded to {n}" for n in ASPECTS] + [f"shape {n}" for n in shapes]
    print("| model | square | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * (len(ASPECTS) + len(shapes)))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
