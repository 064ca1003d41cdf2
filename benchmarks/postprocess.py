"""Benchmark SOLO inference decoding (`detections` of one image) and Matrix NMS against the number of candidates.

Synthetic inputs: mask features (E, h, w) made of one compact blob per channel and random kernels (R, C) biased
negative (cell-offset weights 0), so that each decoded mask covers a few blobs (median about 6% of the image; a few fall
to the small-mask filter). Scores (R, nc) are zero except exactly K (cell, class) entries in (conf, 1]; the K entries
of a smaller K are a subset of those of a larger one, and kernels and mask features are shared by every K. Decoding
keeps at most `nms_pre` candidates, so the table also times Matrix NMS alone on the masks of the top
n = min(K, nms_pre) candidates.

Run (about 15 s on 2 idle CPU cores):
    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 python benchmarks/postprocess.py

Shape shorthand: R grid cells over all levels, nc classes, E mask-feature channels, C kernel channels (E + 2 with
cell offsets, whose weights are 0 here), h and w mask-feature height and width.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from timing import median_ms

from ultra_solo.models.solov2.decode import DecodeSettings, detections, matrix_nms
from ultra_solo.models.solov2.network import SOLOv2Model, decode_settings


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo11n-solo.yaml", help="model YAML: its solo block and kernel size E")
    parser.add_argument("--imgsz", type=int, default=640, help="input size; mask features are imgsz / 4")
    parser.add_argument("--candidates", type=int, nargs="+", default=[10, 50, 100, 200, 500, 1000], help="K values")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold")
    parser.add_argument("--max-det", type=int, default=100, help="maximum detections")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic inputs")
    return parser.parse_args()


def blob_features(channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Return mask features (E, size, size): one paraboloid blob per channel, exactly zero outside its radius."""
    cy, cx = (torch.rand(2, channels, 1, 1, generator=gen) * size).unbind(0)
    radius = size * (0.05 + 0.25 * torch.rand(channels, 1, 1, generator=gen))
    pixels = torch.arange(size) + 0.5
    dist2 = (pixels[None, :, None] - cy) ** 2 + (pixels[None, None, :] - cx) ** 2
    return (1 - dist2 / radius**2).clamp_min(0) * 4


def sparse_scores(entries: torch.Tensor, values: torch.Tensor, k: int, shape: tuple[int, int]) -> torch.Tensor:
    """Return scores of `shape` (R, nc), zero except the first K flat `entries`, set to the first K `values`."""
    scores = torch.zeros(shape[0] * shape[1], device=values.device)
    scores[entries[:k]] = values[:k]
    return scores.view(shape)


def nms_inputs(
    scores: torch.Tensor, kernels: torch.Tensor, mask_feats: torch.Tensor, settings: DecodeSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return Matrix NMS inputs (masks (n, h*w), labels (n,), areas (n,)) of the top n = min(K, nms_pre) candidates."""
    cell, cls = (scores > 0).nonzero(as_tuple=True)
    top = scores[cell, cls].argsort(descending=True)[: settings.nms_pre]
    cell, cls = cell[top], cls[top]
    masks = (kernels[cell, : len(mask_feats)] @ mask_feats.flatten(1)).sigmoid() > settings.mask_thr
    return masks, cls, masks.sum(1)


def time_row(
    scores: torch.Tensor,
    kernels: torch.Tensor,
    mask_feats: torch.Tensor,
    settings: DecodeSettings,
    args: argparse.Namespace,
) -> str:
    """Time decoding of the K candidates in `scores` and Matrix NMS of the top min(K, nms_pre); return a table row."""
    device, k = kernels.device, int((scores > 0).sum())
    decode = partial(detections, (scores[None], kernels[None], mask_feats[None]), settings, args.conf, args.max_det)
    nms_args = nms_inputs(scores, kernels, mask_feats, settings)
    nms = partial(matrix_nms, *nms_args, settings.kernel, settings.sigma)
    decode_ms = median_ms(decode, device, args.warmup, args.repeats)
    nms_ms = median_ms(nms, device, args.warmup, args.repeats)
    return f"{k:>6} {len(nms_args[0]):>8} {decode_ms:>10.2f} {nms_ms:>14.2f} {len(decode()[0][1]):>5}"


def main() -> None:
    """Time decoding and Matrix NMS for each K and print the table."""
    args = parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    model = SOLOv2Model(args.model, verbose=False)
    settings = decode_settings(model)
    cells, nc, channels = settings.layout.num_cells, model.yaml["nc"], model.model[-1].kernel_size
    kernels = torch.randn(cells, channels, generator=gen) - 0.5  # (R, E)
    offsets = torch.zeros(cells, settings.layout.kernel_channels(channels) - channels)  # cell-offset weights: none
    kernels = torch.cat((kernels, offsets), 1).to(device)  # (R, C)
    entries = torch.randperm(cells * nc, generator=gen)[: max(args.candidates)].to(device)
    values = (args.conf + (1 - args.conf) * (1 - torch.rand(len(entries), generator=gen))).to(device)  # (conf, 1]
    size = args.imgsz // 4
    mask_feats = blob_features(channels, size, gen).to(device)
    print(
        f"{args.model}: R={cells} nc={nc} E={channels} mask features {size}x{size} conf={args.conf} "
        f"nms_pre={settings.nms_pre} max_det={args.max_det} device={device}, "
        f"median of {args.repeats} runs after {args.warmup} warm-up; n = min(K, nms_pre) candidates decoded"
    )
    print(f"{'K':>6} {'n':>8} {'decode ms':>10} {'matrix NMS ms':>14} {'dets':>5}")
    for k in args.candidates:
        print(time_row(sparse_scores(entries, values, k, (cells, nc)), kernels, mask_feats, settings, args))


if __name__ == "__main__":
    main()
