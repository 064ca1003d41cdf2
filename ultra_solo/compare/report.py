"""The comparison's outputs: report.md, summary.csv and curves.png."""

from __future__ import annotations

import csv
import os
import platform
from datetime import datetime
from pathlib import Path

import torch

COLUMNS = {  # summary key -> report header
    "model": "model",
    "params_M": "params (M)",
    "GFLOPs": "GFLOPs",
    "metrics/precision(B)": "box P",
    "metrics/recall(B)": "box R",
    "metrics/mAP50(B)": "box mAP50",
    "metrics/mAP50-95(B)": "box mAP50-95",
    "metrics/precision(M)": "mask P",
    "metrics/recall(M)": "mask R",
    "metrics/mAP50(M)": "mask mAP50",
    "metrics/mAP50-95(M)": "mask mAP50-95",
    "coco/segm_AP50": "COCO segm AP50",
    "coco/segm_AP": "COCO segm AP",
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


def fmt(value) -> str:
    """A table cell: floats with 3 significant decimals, everything else as text."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_summary(file: Path, rows: list[dict]) -> None:
    """summary.csv: one row per model, the report's columns under their metric keys."""
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    with open(file, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict]) -> str:
    """The report's markdown table."""
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(COLUMNS[k] for k in keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(file: Path, rows: list[dict], train_args: dict, val_args: dict, notes: dict[str, str]) -> None:
    """report.md: the table, how each column was measured, the machine, versions and every argument."""
    env = environment(train_args.get("device"))
    text = [
        f"# Comparison: {', '.join(r['model'] for r in rows)}",
        "",
        table(rows),
        "",
        *(f"- {k}: {v}" for k, v in notes.items()),
        "",
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
    """curves.png: mask mAP50 and mAP50-95 per epoch, and summed train / val losses, every model on each plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    panels = [("metrics/mAP50(M)", "mask mAP50"), ("metrics/mAP50-95(M)", "mask mAP50-95")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), tight_layout=True)
    for name, csv_file in results.items():
        df = pl.read_csv(csv_file, infer_schema_length=None)
        epoch = df["epoch"].to_numpy()
        for ax, (col, title) in zip(axes[0], panels):
            ax.plot(epoch, df[col].to_numpy(), marker=".", label=name)
            ax.set_title(title)
        for ax, prefix in zip(axes[1], ("train/", "val/")):
            losses = [c for c in df.columns if c.startswith(prefix)]
            ax.plot(epoch, df.select(losses).sum_horizontal().to_numpy(), marker=".", label=name)
            ax.set_title(f"{prefix[:-1]} loss (sum of the model's loss terms)")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.legend()
    fig.savefig(file, dpi=150)
    plt.close(fig)
