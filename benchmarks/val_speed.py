"""Validation time of trained models side by side: `model.val()` wall time and per-image stages, ratios to the first.

Every model validates the same images with the same arguments (each family's validator and defaults), in turns,
`--rounds` times, once without and once with `save_json` (native-resolution masks and predictions.json, what
`ultra-solo compare` scores with faster-coco-eval); the table gives the median wall time per setting and the metrics,
so a speed change can be checked to leave them unchanged. With `--stages`, a second table gives the detections kept per
image and the time per image of Ultralytics' own validator steps on them (`STAGES`), timed in the last round.

    YOLO_OFFLINE=1 python benchmarks/val_speed.py --models runs/compare/x/yolo11n-seg/weights/best.pt \\
        runs/compare/x/yolo11n-solo/weights/best.pt --data ../shared/datasets/package-seg-small/data.yaml
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.utils import LOGGER

from ultra_solo.compare.compare import model_class
from ultra_solo.models.solov2.val import SOLOValidator

STAGES = ("update_metrics", "_process_batch", "scale_preds", "pred_to_json")  # Ultralytics' per-image validator steps


@contextmanager
def timed_stages(seconds: dict[str, float]):
    """Add up the wall seconds of the validator steps `STAGES` in `seconds`, with the images and detections that
    `_process_batch` matches: Ultralytics' `SegmentationValidator` methods (YOLO's validator) and `SOLOValidator`'s
    own versions of them. `update_metrics` calls the other three; a step's call inside itself (an override calling
    Ultralytics') counts once."""
    patched = []  # (class, name, original or None where the class inherited it)
    running = set()

    def timer(name, step):
        def timed(self, *args, **kwargs):
            if name in running:
                return step(self, *args, **kwargs)
            if name == "_process_batch":
                seconds["images"] = seconds.get("images", 0) + 1
                seconds["detections"] = seconds.get("detections", 0) + len(args[0]["cls"])
            running.add(name)
            start = time.perf_counter()
            try:
                return step(self, *args, **kwargs)
            finally:
                running.discard(name)
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

        return timed

    for cls in (SegmentationValidator, SOLOValidator):
        for name in STAGES:
            if name in vars(cls) or cls is SegmentationValidator:
                patched.append((cls, name, vars(cls).get(name)))
                setattr(cls, name, timer(name, getattr(cls, name)))
    try:
        yield
    finally:
        for cls, name, original in reversed(patched):
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def validate(spec: str, args: argparse.Namespace, save_json: bool, project: Path, stages: bool = False) -> dict:
    """One `val()` of `spec`: wall seconds, the validator's per-image stages (ms) and the mask / box mAP; with `stages`
    also `timed_stages`' detections and ms per image."""
    model = model_class(spec)(spec)
    steps = {}
    start = time.perf_counter()
    kwargs = dict(plots=False, workers=0, project=str(project), name="val", exist_ok=True, verbose=False)
    with timed_stages(steps) if stages else nullcontext():
        metrics = model.val(
            data=args.data, imgsz=args.imgsz, batch=args.batch, device=args.device, save_json=save_json, **kwargs
        )
    seconds = time.perf_counter() - start
    maps = {k: metrics.results_dict[k] for k in ("metrics/mAP50-95(M)", "metrics/mAP50(M)", "metrics/mAP50-95(B)")}
    images = steps.pop("images", 0)
    per_image = {f"stage {k}": v / images * (1 if k == "detections" else 1e3) for k, v in steps.items()}
    return {"s": seconds, **metrics.speed, **maps, **per_image}


def print_stages(runs: dict) -> None:
    """Print `timed_stages`' table: detections and ms per image of each step, last round."""
    print(f"{'model':<60}{'save_json':>10}{'dets/img':>10}{'postprocess':>13}" + "".join(f"{s:>16}" for s in STAGES))
    for (spec, save_json), rs in runs.items():
        r = rs[-1]
        steps = "".join(f"{r.get('stage ' + s, 0.0):>16.1f}" for s in STAGES)
        print(f"{spec[-60:]:<60}{save_json!s:>10}{r['stage detections']:>10.1f}{r['postprocess']:>13.1f}{steps}")


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
    parser.add_argument("--stages", action="store_true", help="also time Ultralytics' validator steps (last round)")
    args = parser.parse_args()
    settings = {"both": (False, True), "off": (False,), "on": (True,)}[args.save_json]
    runs = {}  # (model, save_json) -> list of results
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            stages = args.stages and i == args.rounds - 1
            for save_json in settings:
                for spec in args.models:
                    result = validate(spec, args, save_json, Path(tmp), stages)
                    runs.setdefault((spec, save_json), []).append(result)
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
    if args.stages:
        print_stages(runs)


if __name__ == "__main__":
    main()
