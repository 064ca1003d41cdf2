"""Target assignment against hand-computed cells, empty GT, batched vs per-image, and mask layouts."""

from __future__ import annotations

import torch

from ultra_solo.models.solov2.targets import assign_targets
from ultra_solo.utils.masks import instance_masks

GRIDS = [40, 36, 24, 16, 12]
RANGES = [[0.0, 0.375], [0.1875, 0.75], [0.375, 1.5], [0.75, 3.0], [1.5, 8.0]]  # fractions of the 256 px input side
OFFSETS = [0, 1600, 2896, 3472, 3728, 3872]  # first cell of each level in the (B, R) layout


def square(h: int, top: int, left: int, size: int) -> torch.Tensor:
    """An (h, h) mask with a filled square."""
    m = torch.zeros(h, h)
    m[top : top + size, left : left + size] = 1
    return m


def cells(assigned: torch.Tensor, level: int, value: int) -> set[tuple[int, int]]:
    """(row, col) of the cells of one level (in image 0) assigned to instance `value`."""
    grid = GRIDS[level]
    idx = (assigned[0, OFFSETS[level] : OFFSETS[level + 1]] == value).nonzero().view(-1)
    return {(int(i) // grid, int(i) % grid) for i in idx}


def assign(masks, boxes, batch_idx, batch_size=1, pos_scale=0.2, img=(256, 256)):
    return assign_targets(masks, boxes, batch_idx, batch_size, img, [(g, g) for g in GRIDS], RANGES, pos_scale)


def test_hand_computed_cells_on_a_rectangular_grid():
    # A 256 x 160 (h x w) input with grids S = 8 along the longer side: 8 x 5 cells of 32 x 32 px (`level_grid`).
    # A 64 x 32 px box (sqrt(w*h) = 45.3 px = 0.177 of 256: level 0 only), its mask rows [104, 168), cols [64, 96).
    # Centre of mass (136, 80) px: cell row floor(136 / 32) = 4, col floor(80 / 32) = 2; half sizes 0.2 * (32, 16) =
    # (6.4, 3.2) px stay in that cell: rows floor(4.05)..floor(4.45), cols floor(2.4)..floor(2.6). On an 8 x 8 grid
    # stretched over the input, the column would be floor(80 / 20) = 4.
    masks = torch.zeros(1, 64, 40)  # stride 4
    masks[0, 26:42, 16:24] = 1
    boxes = torch.tensor([[64.0, 104.0, 96.0, 168.0]])
    assigned = assign_targets(masks, boxes, torch.zeros(1), 1, (256, 160), [(8, 5), (4, 3)], RANGES[:2], 0.2)
    assert assigned.shape == (1, 8 * 5 + 4 * 3)
    assert (assigned[0, :40].view(8, 5) == 0).nonzero().tolist() == [[4, 2]] and (assigned[0, 40:] < 0).all()


def test_hand_computed_cells():
    # A 64x64 px square at input pixels [96, 160) of a 256x256 image; masks at stride 4 -> mask pixels [24, 40).
    # Centre of mass 128 px; sqrt(w*h) = 64 px = 0.25 of the side -> levels 0 (0-0.375) and 1 (0.1875-0.75), not 2.
    # Level 0, S=40: centre cell floor(128 * 40/256) = 20; half size 0.2 * 32 = 6.4 px spans
    #   floor(121.6 * 40/256) = 19 .. floor(134.4 * 40/256) = 21 -> rows and cols 19..21 (3 x 3).
    # Level 1, S=36: centre cell floor(128 * 36/256) = 18; span floor(17.1) = 17 .. floor(18.9) = 18 -> 2 x 2.
    masks = square(64, 24, 24, 16)[None]
    boxes = torch.tensor([[96.0, 96.0, 160.0, 160.0]])
    assigned = assign(masks, boxes, torch.zeros(1))
    assert assigned.shape == (1, 3872)
    assert cells(assigned, 0, 0) == {(r, c) for r in (19, 20, 21) for c in (19, 20, 21)}
    assert cells(assigned, 1, 0) == {(r, c) for r in (17, 18) for c in (17, 18)}
    assert (assigned[0, OFFSETS[2] :] == -1).all()
    assert (assigned >= 0).sum() == 9 + 4


def test_pos_scale_and_centre_of_mass():
    # pos_scale 0.1: half size 3.2 px; level 0 spans floor(124.8 * 40/256) = 19 .. floor(131.2 * 40/256) = 20.
    masks = square(64, 24, 24, 16)[None]
    boxes = torch.tensor([[96.0, 96.0, 160.0, 160.0]])
    assigned = assign(masks, boxes, torch.zeros(1), pos_scale=0.1)
    assert cells(assigned, 0, 0) == {(r, c) for r in (19, 20) for c in (19, 20)}
    # An L shape: its centre of mass, not its box centre, picks the centre cell.
    m = torch.zeros(64, 64)
    m[8:56, 8:16] = 1  # vertical bar, mask px x in [8, 16)
    m[48:56, 8:56] = 1  # horizontal bar
    # centre of mass: x = (384 * 12 + 320 * 36) / 704 = 22.9 mask px = 91.6 input px -> level 0 col floor(14.3) = 14
    # y = (384 * 32 + 320 * 52) / 704 = 41.1 mask px = 164.4 px -> row floor(25.7) = 25
    # (the box centre would be 128 px -> cell 20)
    boxes = torch.tensor([[32.0, 32.0, 224.0, 224.0]])  # sqrt area 192 px = 0.75 of the side -> levels 1 and 2
    assigned = assign(m[None], boxes, torch.zeros(1), pos_scale=0.0)
    assert cells(assigned, 1, 0) == {(23, 12)}  # S=36: row floor(164.4 * 36/256) = 23, col floor(91.6 * 36/256) = 12
    assert cells(assigned, 2, 0) == {(15, 8)}  # S=24: row floor(15.4), col floor(8.6)


def test_empty_ground_truth():
    assigned = assign(torch.zeros(0, 64, 64), torch.zeros(0, 4), torch.zeros(0), batch_size=3)
    assert assigned.shape == (3, 3872)
    assert (assigned == -1).all()


def test_empty_mask_is_ignored():
    masks = torch.zeros(1, 64, 64)  # lost to augmentation or downsampling: no centre of mass
    assigned = assign(masks, torch.tensor([[96.0, 96.0, 160.0, 160.0]]), torch.zeros(1))
    assert (assigned == -1).all()


def test_smaller_instance_wins_shared_cells():
    big = square(64, 16, 16, 32)  # 128 px square centred at 128 px
    small = square(64, 28, 28, 8)  # 32 px square centred at 128 px: same centre cell on level 0
    masks = torch.stack([big, small])
    boxes = torch.tensor([[64.0, 64.0, 192.0, 192.0], [112.0, 112.0, 144.0, 144.0]])
    assigned = assign(masks, boxes, torch.zeros(2))
    # big: sqrt 128 -> levels 1, 2; small: sqrt 32 -> level 0 only: no conflict, both assigned.
    assert cells(assigned, 0, 1) and cells(assigned, 1, 0) and cells(assigned, 2, 0)
    # Same level: a 60 px and a 40 px square with the same centre both want level 0 cell (20, 20).
    a, b = square(64, 25, 25, 15), square(64, 27, 27, 10)  # centres 130 px and 128 px
    boxes = torch.tensor([[100.0, 100.0, 160.0, 160.0], [108.0, 108.0, 148.0, 148.0]])
    assigned = assign(torch.stack([a, b]), boxes, torch.zeros(2))
    assert (20, 20) in cells(assigned, 0, 1)  # the smaller mask owns the shared centre cell
    assert (20, 20) not in cells(assigned, 0, 0)


def random_batch(seed: int, batch_size: int = 4, per_image: int = 5, h: int = 64):
    g = torch.Generator().manual_seed(seed)
    masks, boxes, batch_idx = [], [], []
    for b in range(batch_size):
        for _ in range(int(torch.randint(0, per_image + 1, (1,), generator=g))):
            size = int(torch.randint(2, h // 2, (1,), generator=g))
            top, left = (int(x) for x in torch.randint(0, h - size, (2,), generator=g))
            masks.append(square(h, top, left, size))
            boxes.append(torch.tensor([left, top, left + size, top + size], dtype=torch.float32) * 4)
            batch_idx.append(b)
    return torch.stack(masks), torch.stack(boxes), torch.tensor(batch_idx, dtype=torch.float32)


def test_batched_equals_per_image():
    masks, boxes, batch_idx = random_batch(0)
    batched = assign(masks, boxes, batch_idx, batch_size=4)
    assert (batched >= 0).any()
    for b in range(4):
        sel = batch_idx == b
        single = assign(masks[sel], boxes[sel], torch.zeros(int(sel.sum())))
        offset = int((batch_idx < b).sum())  # instance indices of image b start after earlier images'
        expected = torch.where(single[0] >= 0, single[0] + offset, -1)
        assert torch.equal(batched[b], expected)


def test_overlap_layout_matches_per_instance_masks():
    # Non-overlapping instances: decoding the overlap index maps gives the same masks and the same targets.
    masks = torch.stack([square(64, 0, 0, 10), square(64, 20, 20, 30), square(64, 5, 40, 12), square(64, 40, 2, 20)])
    batch_idx = torch.tensor([0.0, 0.0, 1.0, 1.0])
    index_maps = torch.zeros(2, 64, 64, dtype=torch.uint8)
    index_maps[0] = masks[0] * 1 + masks[1] * 2  # instance k of an image -> value k + 1
    index_maps[1] = masks[2] * 1 + masks[3] * 2
    decoded = instance_masks(index_maps, batch_idx, overlap=True)
    assert torch.equal(decoded, instance_masks(masks, batch_idx, overlap=False))
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 50, 50], [40, 5, 52, 17], [2, 40, 22, 60]], dtype=torch.float32) * 4
    assert torch.equal(assign(decoded, boxes, batch_idx, 2), assign(masks, boxes, batch_idx, 2))
