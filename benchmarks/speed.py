"""Inference latency and training images/s of any models side by side, as ratios to the first model.

Every model gets the same images, size and settings; latency is the median per image over repeated passes after a
warm-up, the models taking turns on every image (`ultra_solo.compare.speed`), training speed the training-loop images/s
of a short run (no validation counted).
Models: YAMLs (trained from scratch here), `.pt` checkpoints, or exports (`.onnx`, `.torchscript`; latency only).
Postprocess time depends on how many candidates a model emits: give trained weights for meaningful latencies.

    python benchmarks/speed.py --models yolo11n-seg.yaml solov2-n.yaml --imgsz 320
    python benchmarks/speed.py --models best.pt best.onnx best.torchscript --imgsz 256 --train-epochs 0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from ultralytics.data.utils import check_det_dataset

from ultra_solo.compare.compare import model_class
from ultra_solo.compare.speed import STAGES, TrainSpeed, inference_latency

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128-seg" / "data.yaml"


def train_speed(spec: str, args: argparse.Namespace, project: Path) -> float:
    """Training-loop images/s of a short training run of `spec` (0 for exported models or `--train-epochs 0`)."""
    if args.train_epochs == 0 or not str(spec).endswith((".yaml", ".yml", ".pt")):
        return 0.0
    model = model_class(spec)(spec)
    name = Path(spec).stem
    timer = TrainSpeed(project / f"{name}.json")
    timer.attach(model)
    model.train(
        data=args.data, epochs=args.train_epochs, imgsz=args.imgsz, batch=args.batch, device=args.device,
        fraction=args.fraction, val=False, plots=False, seed=0, workers=0, project=str(project), name=name,
    )  # fmt: skip
    return TrainSpeed.images_per_second(timer.file)


def measure(specs: list[str], images: list[Path], args: argparse.Namespace, project: Path) -> list[dict]:
    """Latency per stage of every model (side by side, taking turns on every image), then each one's training speed."""
    models = {spec: model_class(spec)(spec) for spec in specs}
    kwargs = dict(repeats=args.repeats, device=args.device, conf=args.conf, rect=False)  # rect=False: same square input
    latency = inference_latency(models, images, args.imgsz, **kwargs)
    return [{"model": spec, **latency[spec], "train_img_s": train_speed(spec, args, project)} for spec in specs]


def print_table(rows: list[dict]) -> None:
    """Print the table with ratios to the first model."""
    ref = rows[0]
    print(f"torch threads {torch.get_num_threads()} (Ultralytics sets OMP_NUM_THREADS=1 unless it is set)")
    head = f"{'model':<28}" + "".join(f"{s[:10] + ' ms':>14}" for s in (*STAGES, "total"))
    print(head + f"{'x first':>9}{'train img/s':>13}{'x first':>9}")
    for r in rows:
        times = "".join(f"{r[s]:>14.1f}" for s in (*STAGES, "total"))
        ratio = r["train_img_s"] / ref["train_img_s"] if ref["train_img_s"] and r["train_img_s"] else None
        train = f"{'-':>9}" if ratio is None else f"{ratio:>9.2f}"
        print(f"{r['model']:<28}{times}{r['total'] / ref['total']:>9.2f}{r['train_img_s']:>13.2f}{train}")


def main() -> None:
    """Parse arguments, measure every model, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="YAMLs, .pt checkpoints or exports")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset YAML: latency images and training data")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--images", type=int, default=16, help="validation images timed per pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold (predict default)")
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs of the training-speed run, 0 to skip")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the training set per epoch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = check_det_dataset(args.data)
    val = Path(data["val"])
    images = sorted(p for p in (val.rglob("*") if val.is_dir() else []) if p.suffix.lower() in {".jpg", ".png"})
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.models, images[: args.images], args, Path(tmp))
    print_table(rows)


if __name__ == "__main__":
    main()
