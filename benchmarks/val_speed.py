"""Validation time of trained models side by side: `model.val()` wall time and per-image stages, ratios to the first.

Every model validates the same images with the same arguments (each family's validator and defaults), in turns,
`--rounds` times, once without and once with `save_json` (native-resolution masks and predictions.json, what
`ultra-solo compare` scores with faster-coco-eval); the table gives the median wall time per setting and the metrics,
so a speed change can be checked to leave them unchanged.

    YOLO_OFFLINE=1 python benchmarks/val_speed.py --models runs/compare/x/yolo11n-seg/weights/best.pt \\
        runs/compare/x/yolo11n-solo/weights/best.pt --data ../shared/datasets/package-seg-small/data.yaml
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ultralytics.utils import LOGGER

from ultra_solo.compare.compare import model_class


def validate(spec: str, args: argparse.Namespace, save_json: bool, project: Path) -> dict:
    """One `val()` of `spec`: wall seconds, the validator's per-image stages (ms) and the mask / box mAP."""
    model = model_class(spec)(spec)
    start = time.perf_counter()
    kwargs = dict(plots=False, workers=0, project=str(project), name="val", exist_ok=True, verbose=False)
    metrics = model.val(
        data=args.data, imgsz=args.imgsz, batch=args.batch, device=args.device, save_json=save_json, **kwargs
    )
    seconds = time.perf_counter() - start
    maps = {k: metrics.results_dict[k] for k in ("metrics/mAP50-95(M)", "metrics/mAP50(M)", "metrics/mAP50-95(B)")}
    return {"s": seconds, **metrics.speed, **maps}


def main() -> None:
    """Validate every model in turns, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", required=True, help="trained .pt checkpoints; the first is the reference"
    )
    parser.add_argument("--data", required=True, help="dataset YAML")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="validations of every model per setting, in turns")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--save-json", choices=("both", "off", "on"), default="both", help="validate without, with, or both ways"
    )
    args = parser.parse_args()
    settings = {"both": (False, True), "off": (False,), "on": (True,)}[args.save_json]
    runs = {}  # (model, save_json) -> list of results
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for save_json in settings:
                for spec in args.models:
                    runs.setdefault((spec, save_json), []).append(validate(spec, args, save_json, Path(tmp)))
    LOGGER.info(
        f"torch threads {torch.get_num_threads()}, imgsz {args.imgsz}, batch {args.batch}, {args.rounds} rounds"
    )
    print(f"{'model':<60}{'save_json':>10}{'val s':>8}{'x first':>9}{'infer ms':>10}{'post ms':>9}"
          f"{'mask mAP50-95':>15}{'mask mAP50':>12}{'box mAP50-95':>14}")  # fmt: skip
    for save_json in settings:
        ref = statistics.median(r["s"] for r in runs[(args.models[0], save_json)])
        for spec in args.models:
            rs = runs[(spec, save_json)]
            s = statistics.median(r["s"] for r in rs)
            infer, post = (statistics.median(r[k] for r in rs) for k in ("inference", "postprocess"))
            maps = "".join(f"{rs[0][k]:>{w}.6f}" for k, w in (("metrics/mAP50-95(M)", 15), ("metrics/mAP50(M)", 12),
                                                             ("metrics/mAP50-95(B)", 14)))  # fmt: skip
            same = all(r[k] == rs[0][k] for r in rs for k in rs[0] if k.startswith("metrics"))
            print(
                f"{spec[-60:]:<60}{save_json!s:>10}{s:>8.1f}{s / ref:>9.2f}{infer:>10.1f}{post:>9.1f}{maps}"
                f"{'' if same else '  (metrics differ between rounds)'}"
            )


if __name__ == "__main__":
    main()
