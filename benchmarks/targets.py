"""Benchmark SOLOv2 training-target building per batch: `assign_targets` alone and the loss's full target step.

Synthetic batches: B images of imgsz x imgsz with a fixed number of instances each, half ellipses and half rectangles
whose box sides are log-uniform from 8 px to the image size, so that every head level gets instances. Masks are
binary at stride 4 (N, imgsz/4, imgsz/4), boxes are their tight xyxy boxes in input pixels and `batch_idx` is sorted by
image. `assign_targets` gets float masks, as in the loss; `SOLOv2Loss.targets` gets the uint8 masks of an Ultralytics
batch, decodes their layout (with `--overlap`, index maps with later instances drawn on top) and resizes them to the
mask-feature size (imgsz/4, so a no-op). Every configuration draws its batch from the same seed.

Run (about 15 s on 2 idle CPU cores):
    YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 python benchmarks/targets.py

Shape shorthand: B images, N instances in the batch, h and w mask height and width.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from timing import median_ms
from torchvision.ops import masks_to_boxes
from ultralytics.utils import ops

from ultra_solo.models.solov2.loss import SOLOv2Loss
from ultra_solo.models.solov2.network import SOLOv2Model
from ultra_solo.models.solov2.targets import assign_targets

MASK_STRIDE = 4  # input pixels per mask pixel: Ultralytics' mask_ratio and the SOLOv2 mask-feature stride


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="solov2-n.yaml", help="model YAML: its solo block")
    parser.add_argument("--imgsz", type=int, default=640, help="input size; masks are imgsz / 4")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16, 32], help="batch sizes B")
    parser.add_argument("--instances", type=int, nargs="+", default=[5, 20, 50], help="instances per image")
    parser.add_argument("--overlap", action="store_true", help="give the loss overlap index maps (overlap_mask)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic batches")
    return parser.parse_args()


def random_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Return n binary uint8 masks (n, size, size): ellipses and rectangles of log-uniform sides, 2 px to `size`."""
    sides = (2 * (size / 2) ** torch.rand(n, 2, generator=gen)).floor()  # (n, 2) height, width in 2..size
    corner = ((size - sides) * torch.rand(n, 2, generator=gen)).floor()  # (n, 2) top, left: inside the image
    centre, half = corner + sides / 2, sides / 2
    pixels = torch.arange(size) + 0.5
    dy = ((pixels[None] - centre[:, :1]) / half[:, :1]).abs()  # (n, size) rows
    dx = ((pixels[None] - centre[:, 1:]) / half[:, 1:]).abs()  # (n, size) columns
    ellipse = dy[:, :, None] ** 2 + dx[:, None, :] ** 2 <= 1
    rectangle = (dy[:, :, None] < 1) & (dx[:, None, :] < 1)
    return torch.where(torch.arange(n)[:, None, None] % 2 == 0, ellipse, rectangle).to(torch.uint8)


def make_batch(size: int, instances: int, imgsz: int, overlap: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Return an Ultralytics segment batch of `size` images with `instances` random instances each."""
    n = size * instances
    masks = random_masks(n, imgsz // MASK_STRIDE, gen)
    boxes = (masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1])) * MASK_STRIDE  # (N, 4) xyxy input px, far pixel edges
    batch_idx = torch.arange(size).repeat_interleave(instances).float()
    if overlap:  # one index map per image, later instances on top; uint8 up to 255 instances, as in Ultralytics
        local = torch.arange(n) % instances + 1
        masks = (masks.int() * local[:, None, None]).view(size, instances, *masks.shape[1:]).amax(1)
        masks = masks.to(torch.uint8 if instances < 256 else torch.int32)
    return {
        "img": torch.zeros(size, 3, imgsz, imgsz),
        "masks": masks,
        "cls": torch.randint(0, 80, (n, 1), generator=gen).float(),
        "bboxes": ops.xyxy2xywh(boxes / imgsz),
        "batch_idx": batch_idx,
    }


def time_row(crit: SOLOv2Loss, batch: dict[str, torch.Tensor], args: argparse.Namespace) -> str:
    """Time `assign_targets` and `SOLOv2Loss.targets` on one batch; return a table row."""
    device = batch["img"].device
    img_shape, mask_size = tuple(batch["img"].shape[2:]), tuple(d // MASK_STRIDE for d in batch["img"].shape[2:])
    masks, _, _ = crit.targets(batch, mask_size)  # float (N, h, w) instance masks, as the loss passes them
    boxes = ops.xywh2xyxy(batch["bboxes"]) * batch["bboxes"].new_tensor(img_shape[::-1] * 2)  # (N, 4) xyxy px
    size = batch["img"].shape[0]
    grids, ranges, pos_scale = crit.layout.grids(img_shape), crit.scale_ranges, crit.pos_scale
    assign = partial(assign_targets, masks, boxes, batch["batch_idx"], size, img_shape, grids, ranges, pos_scale)
    assign_ms = median_ms(assign, device, args.warmup, args.repeats)
    full_ms = median_ms(partial(crit.targets, batch, mask_size), device, args.warmup, args.repeats)
    n, positives = len(masks), int((assign() >= 0).sum())
    return f"{size:>4} {n // size:>10} {n:>6} {assign_ms:>10.2f} {full_ms:>16.2f} {positives:>14}"


def main() -> None:
    """Time target building for each batch size and instance count and print the table."""
    args = parse_args()
    device = torch.device(args.device)
    model = SOLOv2Model(args.model, verbose=False)
    model.args = {"overlap_mask": args.overlap}
    crit = model.init_criterion()
    print(
        f"{args.model}: imgsz={args.imgsz} masks {args.imgsz // 4}x{args.imgsz // 4} overlap_mask={args.overlap} "
        f"device={device}, median of {args.repeats} runs after {args.warmup} warm-up"
    )
    print(f"{'B':>4} {'inst/image':>10} {'N':>6} {'assign ms':>10} {'full targets ms':>16} {'positive cells':>14}")
    for size in args.batch:
        for instances in args.instances:
            gen = torch.Generator().manual_seed(args.seed)
            batch = make_batch(size, instances, args.imgsz, args.overlap, gen)
            print(time_row(crit, {k: v.to(device) for k, v in batch.items()}, args))


if __name__ == "__main__":
    main()
