"""The comparison's outputs: report.md, summary.csv and curves.png."""

from __future__ import annotations

import csv
import math
import os
import platform
from datetime import datetime
from pathlib import Path

import torch

from .stats import mean_std, paired_t_interval

COLUMNS = {  # summary key -> report header ({imgsz}: the evaluation size)
    "model": "model",
    "seed": "seed",
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
    "coco_mask_mAP75": "COCO mask mAP75",
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
    "predictions.jpg: the first validation images in rows; ground truth, then for each model, per ground-truth object,"
    " its prediction with the highest mask IoU (any score down to 0.001, drawn with its score; masks at the original"
    " resolution, `retina_masks=True`), the ground truth's outlines in white, and the mean of those IoUs in the title."
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
    """summary.csv: one row per model (and seed), the report's columns under their metric keys."""
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


PER_MODEL = {"model", "seed", "weights", "params_M", "GFLOPs", "latency_ms"}  # not spread over seeds


def by_model(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """Rows grouped as {model: {seed: row}}, models in their order."""
    groups: dict[str, dict[int, dict]] = {}
    for r in rows:
        groups.setdefault(r["model"], {})[r["seed"]] = r
    return groups


def seed_sections(rows: list[dict], imgsz: int) -> list[str]:
    """Markdown: mean ± std over seeds per model, then every model's per-seed paired differences from the first."""
    keys = [k for k in COLUMNS if k not in PER_MODEL and all(isinstance(r.get(k), (int, float)) for r in rows)]
    groups = by_model(rows)
    header = "| model | seeds | " + " | ".join(COLUMNS[k].format(imgsz=imgsz) for k in keys) + " |"
    text = ["## Over seeds", "", "Mean ± sample standard deviation over each model's seeds.", "", header]
    text.append("|" + "---|" * (len(keys) + 2))
    for model, runs in groups.items():
        cells = [mean_std([r[k] for r in runs.values()]) for k in keys]
        spread = " | ".join(f"{fmt(k, m)} ± {fmt(k, sd)}" for k, (m, sd) in zip(keys, cells))
        text.append(f"| {model} | {', '.join(map(str, runs))} | {spread} |")
    (reference, ref_runs), *others = groups.items()
    for model, runs in others:
        seeds = [s for s in ref_runs if s in runs]
        text += [
            "",
            f"### {model} minus {reference}, paired by seed ({len(seeds)} seeds: {', '.join(map(str, seeds))})",
            "",
            "95 % interval: mean difference ± t(0.975, n - 1) x sd / sqrt(n) over the per-seed differences.",
            "",
            "| metric | mean difference | 95 % interval | what it says |",
            "|---|---|---|---|",
        ]
        for k in keys:
            iv = paired_t_interval([runs[s][k] for s in seeds], [ref_runs[s][k] for s in seeds])
            bounds = "-" if iv.n < 2 else f"[{iv.low:+.4f}, {iv.high:+.4f}]"
            says = iv.verdict(model, reference)
            text.append(f"| {COLUMNS[k].format(imgsz=imgsz)} | {iv.mean:+.4f} | {bounds} | {says} |")
    return [*text, ""]


def bootstrap_sections(pairs: list[tuple[dict, dict, dict]], imgsz: int) -> list[str]:
    """Markdown: for every (row, reference row, {metric: Interval}), the COCO metric differences from the reference on
    the validation images with their paired-bootstrap intervals, in words."""
    if not pairs:
        return []
    n = next(iter(pairs[0][2].values())).n if pairs[0][2] else 0
    text = [
        "## Differences over the validation images (paired bootstrap)",
        "",
        f"Each model against the first one (same seed), on the {n} validation images: the difference on all of them,"
        " and the 2.5-97.5 percentiles of the difference when the images are drawn again with replacement (the same"
        " draw for both models, faster-coco-eval's per-image matches accumulated again). An interval that excludes 0"
        " says the difference does not depend on which of these images were drawn; it says nothing about training"
        " noise (another seed can still change it: `seeds=`).",
    ]
    for row, ref, intervals in pairs:
        seed = f" (seed {row['seed']})" if "seed" in row else ""
        model, reference = row["model"], ref["model"]
        header = f"| metric | {model} | {reference} | difference | 95 % interval | what it says |"
        text += ["", f"### {model} minus {reference}{seed}", "", header, "|---|---|---|---|---|---|"]
        for k, iv in intervals.items():
            bounds = "-" if math.isnan(iv.low) else f"[{iv.low:+.4f}, {iv.high:+.4f}]"
            cells = f"{fmt(k, row[k])} | {fmt(k, ref[k])} | {iv.mean:+.4f} | {bounds} | {iv.verdict(model, reference)}"
            text.append(f"| {COLUMNS[k].format(imgsz=imgsz)} | {cells} |")
    return [*text, ""]


def write_report(
    file: Path, rows: list[dict], train_args: dict, val_args: dict, notes: dict[str, str], pairs: list | None = None
) -> None:
    """report.md: the table, how each column was measured, the machine, versions and every argument; with `pairs`
    (see `bootstrap_sections`) the bootstrap intervals of the differences."""
    env = environment(train_args.get("device"))
    text = [
        f"# Comparison: {', '.join(dict.fromkeys(r['model'] for r in rows))}",
        "",
        table(rows, val_args["imgsz"]),
        "",
        *(f"- {k}: {v}" for k, v in notes.items()),
        "",
        *(seed_sections(rows, val_args["imgsz"]) if any("seed" in r for r in rows) else []),
        *bootstrap_sections(pairs or [], val_args["imgsz"]),
        *(["![predictions](predictions.jpg)", "", PICTURE, ""] if (file.parent / "predictions.jpg").is_file() else []),
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in env.items()),
        f"- seed: {train_args.get('seed', 'one per run (the seed column)')}",
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
