"""Benchmark the CPU operator choices of SOLO's inference path against the plain operators they replace.

Each row times one choice on the inputs it was made for (medians; same process, same inputs, results checked equal):
- `resample.above` (a comparison into the input's float dtype) vs `x > thr` into bool, and its cast to float;
- `decode.intersections` (int8 matrix product with int32 sums) vs the float32 product of 0/1 masks;
- `decode.block_statistics` (sigmoid, threshold, areas and sums inside the masks, 32 candidates at a time) vs each
  step over all 500 candidates;
- `decode.pool_votes` (mask voting's distinct rows of weights, a sparse product) vs the dense product over all voters,
  and where predict votes (few detections and candidates), the dense product vs `pool_votes`;
- `decode.take_rows` (one `index_select`) vs `gather` with an expanded index;
- `resample.picked_rows` (rows of a mask and, of its transpose, one gather along the columns) vs `gather` of the rows;
- `resample.line_maxima` (elementwise interpolation at the extreme columns) vs products with matrices of column and
  row weights;
- `resample.mask_boxes` (uint8 `amax`) vs `torchvision.ops.masks_to_boxes` (boolean reductions);
- `pan_head.conv_with_coords` in inference mode (CoordConv channels' share cached per size) vs the conv over C + 2
  channels it replaces.

Run (about 20 s on 2 idle CPU cores):
    python benchmarks/ops.py
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from timing import median_ms
from torchvision.ops import masks_to_boxes
from ultralytics.nn.modules import Conv

from ultra_solo.models.solov2.decode import block_statistics, intersections, pool_votes, take_rows, voted_probs
from ultra_solo.models.solov2.head import with_coords
from ultra_solo.models.solov2.pan_head import conv_with_coords
from ultra_solo.models.solov2.resample import above, line_maxima, mask_boxes, picked_rows, upsample_probs


def row(name: str, ours, plain, device: torch.device, args: argparse.Namespace) -> str:
    """Time both callables and return a table row: name, ours, plain (us) and the ratio."""
    a = median_ms(ours, device, args.warmup, args.repeats) * 1000
    b = median_ms(plain, device, args.warmup, args.repeats) * 1000
    return f"{name:<52}{a:>10.0f}{b:>10.0f}{b / a:>8.1f}x"


def comparisons(gen: torch.Generator) -> list[tuple]:
    """`above` vs comparisons into bool, on 1 x 20 x 6400 floats (candidates' probabilities at imgsz 320)."""
    x = torch.rand(1, 20, 6400, generator=gen)
    assert torch.equal(above(x, 0.5).bool(), x > 0.5)
    return [
        ("x > 0.5 on 1x20x6400 floats", partial(above, x, 0.5), partial(torch.gt, x, 0.5)),
        ("(x > 0.5) as floats", partial(above, x, 0.5), lambda: (x > 0.5).float()),
    ]


def overlaps(gen: torch.Generator) -> list[tuple]:
    """`intersections` vs the float32 product, 500 candidates' 0/1 masks of 88 x 88 (validation at imgsz 352)."""
    masks = (torch.rand(1, 500, 88 * 88, generator=gen) < 0.17).float()

    def plain():
        return masks @ masks.transpose(1, 2)

    assert torch.equal(intersections(masks), plain())
    return [("intersections of 500 masks 88x88", partial(intersections, masks), plain)]


def statistics(gen: torch.Generator) -> list[tuple]:
    """`block_statistics` vs each step over all candidates, on 1 x 500 x 6400 mask logits (validation at imgsz 320)."""
    logits = torch.randn(1, 500, 6400, generator=gen) * 4

    def plain():
        probs = logits.clone().sigmoid_()
        masks = above(probs, 0.5)
        return probs, masks, masks.sum(2), (probs * masks).sum(2)

    assert all(torch.equal(a.float(), b) for a, b in zip(block_statistics(logits.clone(), 0.5), plain()))
    return [("mask statistics of 500 candidates 80x80", lambda: block_statistics(logits.clone(), 0.5), plain)]


def votes(gen: torch.Generator) -> list[tuple]:
    """`pool_votes` vs the dense product of the distinct rows of weights over every voter: 300 detections of 500
    candidates 80 x 80, 190 of them pooled, in 70 distinct rows of 6 voters among 270 (as yolo11n-solo's validation
    images of package-seg have them)."""
    probs, order = torch.rand(500, 6400, generator=gen), torch.randperm(500, generator=gen)
    distinct = torch.zeros(70, 500)
    for r in range(70):
        distinct[r, torch.randperm(270, generator=gen)[:6]] = torch.rand(6, generator=gen) + 0.1
    weights = torch.eye(300, 500)  # detections with only themselves as voters
    weights[:190] = distinct[torch.randint(0, 70, (190,), generator=gen)]
    weights /= weights.sum(1, keepdim=True)
    own = probs.index_select(0, order[:300])

    def plain():
        pooled = ((weights > 0).sum(1) > 1).nonzero()[:, 0]
        rows, inverse = torch.unique(weights[pooled], dim=0, return_inverse=True)
        voters = (rows > 0).any(0).nonzero()[:, 0]
        voted = rows[:, voters] @ probs.index_select(0, order[voters])
        return own.clone().index_copy_(0, pooled, voted.index_select(0, inverse))

    torch.testing.assert_close(pool_votes(probs, order, weights, own.clone()), plain())
    return [
        ("mask voting, 190 of 300 detections 80x80", lambda: pool_votes(probs, order, weights, own.clone()), plain),
        few_votes(gen),
    ]


def few_votes(gen: torch.Generator) -> tuple:
    """`voted_probs`' dense product vs `pool_votes` where predict votes: 5 detections among 17 candidates left of 135
    (yolo11n-solo on package-seg at conf 0.25), each with 3 voters besides itself."""
    probs, order = torch.rand(1, 135, 6400, generator=gen), torch.randperm(135, generator=gen)[None, :17]
    weights = torch.eye(5, 17)[None] + torch.zeros(1, 5, 17).index_fill_(2, torch.tensor([5, 9, 12]), 0.5)  # (1, 5, 17)
    unsorted = order[:, :5]

    def chosen():
        return voted_probs(probs, order, unsorted, weights)

    def plain():
        return voted_probs(probs, order, unsorted, weights, sparse_from=0)

    torch.testing.assert_close(chosen(), plain())
    return "mask voting, 5 detections of 17 candidates 80x80", chosen, plain


def rows(gen: torch.Generator) -> list[tuple]:
    """`take_rows` vs `gather`, 20 of 20 rows of 6400 floats; `picked_rows` vs `gather`, 6 rows and 6 columns of each
    of 300 masks 80 x 80 (validation boxes at imgsz 320)."""
    x, index = torch.rand(1, 20, 6400, generator=gen), torch.randperm(20, generator=gen)[None]

    def gather():
        return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))

    assert torch.equal(take_rows(x, index), gather())
    out = [("rows of 1x20x6400 by index", partial(take_rows, x, index), gather)]
    masks, lines = torch.rand(300, 80, 80, generator=gen), torch.randint(0, 80, (300, 6), generator=gen)
    for name, probs in (("rows", masks), ("columns", masks.transpose(1, 2))):

        def plain(probs=probs):
            return probs.gather(1, lines[..., None].expand(-1, -1, 80))

        assert torch.equal(picked_rows(probs, lines), plain())
        out.append((f"6 {name} of each of 300 masks 80x80", partial(picked_rows, probs, lines), plain))
    return out


def maxima(gen: torch.Generator) -> list[tuple]:
    """`line_maxima` vs products with a (w, 2w) matrix of column weights and a (2 scale, 3) one of row weights, on
    the 3 feature rows around both edges of 300 masks of width 80, scale 4 (validation boxes at imgsz 320)."""
    scale, w = 4, 80
    rows = torch.rand(300, 2, 3, w, generator=gen)
    u, t, j = 0.5 / scale, (torch.arange(scale) + 0.5) / scale, torch.arange(w - 1)
    columns = torch.zeros(w, 2 * w)  # each pair of columns at its extreme weights, then the two border columns
    columns[j, 2 * j], columns[j + 1, 2 * j], columns[j, 2 * j + 1], columns[j + 1, 2 * j + 1] = 1 - u, u, u, 1 - u
    columns[0, 2 * w - 2] = columns[w - 1, 2 * w - 1] = 1
    weights = torch.zeros(2 * scale, 3)  # the scale output rows of each pair of feature rows
    for pair in (0, 1):
        weights[pair * scale : (pair + 1) * scale, pair : pair + 2] = torch.stack((1 - t, t), 1)

    def plain():
        return (weights @ (rows @ columns)).amax(3)

    expected = upsample_probs(rows[:4, 0], (3 * scale, w * scale))[:, scale // 2 : scale // 2 + 2 * scale].amax(2)
    torch.testing.assert_close(line_maxima(rows, scale)[:4, 0], expected)
    torch.testing.assert_close(line_maxima(rows, scale), plain())
    return [("maxima of 16 upsampled rows at 600 edges, w 80", partial(line_maxima, rows, scale), plain)]


def boxes(gen: torch.Generator) -> list[tuple]:
    """`mask_boxes` vs torchvision's `masks_to_boxes` on 4 and 500 masks of 320 x 320."""
    out = []
    for n in (4, 500):
        masks = torch.rand(n, 320, 320, generator=gen) > 0.999
        masks[:, 10, 10] = True  # no empty mask (torchvision's boxes of empty masks differ)
        assert torch.equal(mask_boxes(masks), masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]))
        out.append((f"boxes of {n} masks 320x320", partial(mask_boxes, masks), partial(masks_to_boxes, masks)))
    return out


def coord_conv(gen: torch.Generator) -> list[tuple]:
    """`conv_with_coords` in inference mode vs the 3x3 conv over 64 + 2 channels at 40 x 40."""
    layer = Conv(64 + 2, 64, 3).eval()
    x = torch.rand(1, 64, 40, 40, generator=gen)

    def ours():
        with torch.inference_mode():
            return conv_with_coords(layer, x)

    def plain():
        with torch.inference_mode():
            return layer(with_coords(x))

    torch.testing.assert_close(ours(), plain())
    return [("3x3 conv over 64 + 2 CoordConv channels at 40x40", ours, plain)]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    gen, device = torch.Generator().manual_seed(0), torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} runs")
    print(f"{'operation':<52}{'ours us':>10}{'plain us':>10}{'ratio':>9}")
    for cases in (comparisons, statistics, overlaps, votes, rows, maxima, boxes, coord_conv):
        for name, ours, plain in cases(gen):
            print(row(name, ours, plain, device, args))


if __name__ == "__main__":
    main()
