"""Fine-tuning from a YOLO-seg checkpoint: YOLO11n-seg, yolo11n-solo (trunk and head) and a trunk-only ablation.

The protocol a YOLO user follows, in one `ultra-solo compare` folder so that the three runs differ only in the model:
every model trains with `pretrained=<checkpoint>` on the target data (package-seg-small, 10 epochs, imgsz 320,
batch 16, seed 0), is scored with one validator and faster-coco-eval, and the report's `weights` column says what each
one took from the checkpoint. The models:
- `yolo11n-seg.yaml`: Ultralytics' own transfer (trunk, Proto, mask coefficients, box branch, class branch);
- `yolo11n-solo.yaml`: SOLO's (trunk, Proto, mask coefficients as kernels, class branch; no box branch to take);
- `benchmarks/ablation/yolo11n-solo-trunk-only.yaml`: the trunk only, the head from SOLO's own initialisation.

With `--checkpoint` (e.g. a real COCO `yolo11n-seg.pt`, on a GPU machine) that file is used. Without it, one is made
here, since no COCO checkpoint can be downloaded on these machines: YOLO11n-seg trained on coco128-seg. Ultralytics'
defaults (`optimizer=auto`: AdamW at lr0 0.00012 for 80 classes) leave mask and box mAP at 0 after 18 epochs at imgsz
320, a checkpoint with nothing to transfer, and so did SGD at lr0 0.01 with `single_cls=True` for 30 epochs at batch 16
(240 iterations, 100 of them warmup: mask mAP50 0.001 on coco128-seg, measured here). The recipe: `single_cls=True`
(one "object" class, which 1-class target data such as package-seg's then fit exactly), SGD at lr0 0.01, 160 epochs
at batch 8 (2,560 iterations) at imgsz 320, validation only at the end. 80 epochs (ultra-solo 0.2's recipe) left a
checkpoint whose head had learned almost nothing to transfer (mask mAP50 0.012 on coco128-seg); twice as many cost about
an hour here. The checkpoint's own mask mAP on coco128-seg is printed before the comparison.

Run (hours on 2 CPU cores: the checkpoint, then three 10-epoch trainings; `--seeds 0,1` trains each model per seed):
    YOLO_OFFLINE=1 python benchmarks/transfer.py --project /abs/path/runs/transfer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ultralytics import YOLO

from ultra_solo.compare import compare

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TRUNK_ONLY = ROOT / "benchmarks" / "ablation" / "yolo11n-solo-trunk-only.yaml"
MODELS = ["yolo11n-seg.yaml", "yolo11n-solo.yaml", str(TRUNK_ONLY)]
CHECKPOINT_RECIPE = dict(epochs=160, imgsz=320, batch=8, optimizer="SGD", lr0=0.01, single_cls=True, val=False, seed=0)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a YOLO11n-seg checkpoint to fine-tune from (default: make one)")
    parser.add_argument("--source-data", default=str(DATASETS / "coco128-seg" / "data.yaml"), help="for the checkpoint")
    parser.add_argument("--data", default=str(DATASETS / "package-seg-small" / "data.yaml"), help="target data")
    parser.add_argument("--project", required=True, help="absolute output folder")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    seeding = parser.add_mutually_exclusive_group()
    seeding.add_argument("--seed", type=int, default=0)
    seeding.add_argument("--seeds", help="e.g. 0,1: every model once per seed (compare's seeds), not with --seed")
    parser.add_argument("--name", default="fine-tune", help="the compare folder under --project")
    parser.add_argument("--models", nargs="+", default=MODELS, help="model YAMLs, the first the reference (default: "
                        "YOLO11n-seg, yolo11n-solo, trunk-only); more rows join the same folder")  # fmt: skip
    return parser.parse_args()


def make_checkpoint(data: str, project: Path) -> Path:
    """Train YOLO11n-seg on `data` with `CHECKPOINT_RECIPE` (resuming an interrupted run) and return its last.pt."""
    run = project / "checkpoint"
    last = run / "weights" / "last.pt"
    if last.is_file() and (run / "weights" / "best.pt").is_file():
        return last
    model = YOLO(str(last)) if last.is_file() else YOLO("yolo11n-seg.yaml")
    model.train(data=data, project=str(project), name="checkpoint", exist_ok=True, resume=last.is_file(),
                **CHECKPOINT_RECIPE)  # fmt: skip
    return last


def main() -> None:
    """Make (or take) the checkpoint, print its accuracy, then fine-tune and compare the three models."""
    args = parse_args()
    project = Path(args.project).resolve()
    checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(args.source_data, project)
    single_cls = YOLO(str(checkpoint)).ckpt.get("train_args", {}).get("single_cls", False)
    metrics = YOLO(str(checkpoint)).val(data=args.source_data, imgsz=args.imgsz, batch=args.batch, plots=False,
                                        single_cls=single_cls)  # fmt: skip
    print(f"checkpoint {checkpoint}: mask mAP50 {metrics.seg.map50:.3f}, mAP50-95 {metrics.seg.map:.3f} on the source")
    seeds = {"seeds": args.seeds} if args.seeds else {"seed": args.seed}
    folder = compare(data=args.data, models=args.models, name=args.name, project=project, pretrained=str(checkpoint),
                     epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, **seeds)  # fmt: skip
    print((folder / "report.md").read_text())


if __name__ == "__main__":
    main()
