"""The comparison's outputs: report.md, summary.csv and curves.png."""

from __future__ import annotations

import csv
import os
import platform
from datetime import datetime
from pathlib import Path

import torch

COLUMNS = {  # summary key -> report header ({imgsz}: the evaluation size)
    "model": "model",
    "weights": "weights",
    "params_M": "params (M)",
    "GFLOPs": "GFLOPs@{imgsz}",
    "metrics/precision(B)": "box P",
    "metrics/recall(B)": "box R",
    "metrics/mAP50(B)": "box mAP50",
    "metrics/mAP50-95(B)": "box mAP50-95",
    "metrics/precision(M)": "mask P",
    "metrics/recall(M)": "mask R",
    "metrics/mAP50(M)": "mask mAP50",
    "metrics/mAP50-95(M)": "mask mAP50-95",
    "coco_mask_mAP50": "COCO mask mAP50",
    "coco_mask_mAP50-95": "COCO mask mAP50-95",
    "mask_mAP_small": "mask mAP small",
    "mask_mAP_medium": "mask mAP medium",
    "mask_mAP_large": "mask mAP large",
    "boundary_mAP50": "boundary mAP50",
    "boundary_mAP50-95": "boundary mAP50-95",
    "latency_ms": "latency ms",
    "train_img_s": "train img/s",
    "train_hours": "training h",
}


def environment(device: str | None) -> dict[str, str]:
    """Hardware and package versions of this process."""
    import torchvision
    import ultralytics
    from ultralytics.utils.torch_utils import get_cpu_info, get_gpu_info

    import ultra_solo

    gpu = get_gpu_info(0) if torch.cuda.is_available() and str(device) not in {"cpu", "mps"} else "none used"
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": f"{get_cpu_info()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "ultralytics": ultralytics.__version__,
        "ultra-solo": ultra_solo.__version__,
    }


PICTURE = (
    "predictions.jpg: the first validation images in rows; ground truth, then each model's predictions (predict"
    " defaults, masks at the original resolution, `retina_masks=True`)."
)
FORMATS = {"latency_ms": "{:.1f}", "train_img_s": "{:.2f}", "params_M": "{:.2f}", "GFLOPs": "{:.2f}"}


def fmt(key: str, value) -> str:
    """A table cell: one format per column (`FORMATS`, else 3 decimals for floats), '-' for a missing value."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return FORMATS.get(key, "{:.3f}").format(value)
    return str(value)


def write_summary(file: Path, rows: list[dict]) -> None:
    """summary.csv: one row per model, the report's columns under their metric keys."""
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict], imgsz: int) -> str:
    """The report's markdown table."""
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(COLUMNS[k].format(imgsz=imgsz) for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(file: Path, rows: list[dict], train_args: dict, val_args: dict, notes: dict[str, str]) -> None:
    """report.md: the table, how each column was measured, the machine, versions and every argument."""
    env = environment(train_args.get("device"))
    text = [
        f"# Comparison: {', '.join(r['model'] for r in rows)}",
        "",
        table(rows, val_args["imgsz"]),
        "",
        *(f"- {k}: {v}" for k, v in notes.items()),
        "",
        *(["![predictions](predictions.jpg)", "", PICTURE, ""] if (file.parent / "predictions.jpg").is_file() else []),
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in env.items()),
        f"- seed: {train_args.get('seed')}",
        "",
        "## Training arguments (identical for every model; checked on each run's args.yaml)",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(train_args.items())),
        "",
        "## Evaluation arguments (one validator configuration for every model)",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(val_args.items())),
        "",
    ]
    file.write_text("\n".join(text))


def plot_curves(file: Path, results: dict[str, Path]) -> None:
    """curves.png: mask mAP50 and mAP50-95 per epoch of every model on shared axes, then one panel per model with its
    own loss terms (train solid, val dashed): the families' losses are defined differently, so they get no shared axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    frames = {name: pl.read_csv(f, infer_schema_length=None) for name, f in results.items()}
    rows = 1 + (len(frames) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4 * rows), tight_layout=True, squeeze=False)
    for name, df in frames.items():
        for ax, col in zip(axes[0], ("metrics/mAP50(M)", "metrics/mAP50-95(M)")):
            ax.plot(df["epoch"].to_numpy(), df[col].to_numpy(), marker=".", label=name)
            ax.set_title(f"mask {col.split('/')[1][:-3]}")
    for ax, (name, df) in zip(axes[1:].flat, frames.items()):
        terms = [c[6:] for c in df.columns if c.startswith("train/") and df[c].abs().sum() > 0]  # YOLO logs zeros too
        for term, color in zip(terms, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            for split, style in (("train", "-"), ("val", "--")):
                if f"{split}/{term}" in df.columns:
                    values = df[f"{split}/{term}"].to_numpy()
                    ax.plot(df["epoch"].to_numpy(), values, style, color=color, marker=".", label=f"{split}/{term}")
        ax.set_title(f"{name}: its own loss terms (train solid, val dashed)")
    for ax in axes.flat:
        if ax.has_data():
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
        else:
            ax.set_axis_off()
    fig.savefig(file, dpi=150)
    plt.close(fig)
