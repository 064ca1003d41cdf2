"""The grid and kernel layout: cell tables, the mask logits of a kernel (brute force), and the loss's logits tied to
decoding's for the same cells."""

from __future__ import annotations

import pytest
import torch

from ultra_solo.models.solov2.decode import DecodeSettings, decode
from ultra_solo.models.solov2.head import flatten_levels
from ultra_solo.models.solov2.layout import GridLayout
from ultra_solo.models.solov2.loss import positive_mask_logits
from ultra_solo.models.solov2.network import SOLOv2Model


def test_cell_tables_are_cached_normal_tensors():
    layout = GridLayout(num_grids=(3, 1), strides=(7, 21))  # grids no other test uses: built here first
    with torch.inference_mode():  # first built while validating ...
        strides, geometry = layout.cell_strides(), layout.cell_geometry()
    assert not strides.is_inference() and not geometry.is_inference()  # ... still usable by the loss in training
    assert layout.cell_strides() is strides and layout.cell_geometry() is geometry
    assert strides.tolist() == [7.0] * 9 + [21.0]
    assert geometry[4].tolist() == [0.5, 0.5, 3.0, 3.0] and geometry[9].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert geometry[5].tolist() == pytest.approx([5 / 6, 0.5, 3.0, 3.0])  # row 1, column 2 of the 3 x 3 level
    assert layout.num_cells == 10 and layout.level_sizes() == [9, 1]


def test_grids_keep_cells_square_on_rectangular_inputs():
    layout = GridLayout(num_grids=(40, 20, 10), strides=(8, 16, 32))
    assert layout.grids((320, 320)) == layout.grids() == [(40, 40), (20, 20), (10, 10)]
    assert layout.grids((256, 320)) == [(32, 40), (16, 20), (8, 10)]  # = the neck's outputs of a 256 x 320 input
    assert layout.grids((320, 224)) == [(40, 28), (20, 14), (10, 7)]
    assert layout.grids((640, 480)) == [(40, 30), (20, 15), (10, 8)]  # 7.5 rounds to 8 (round half to even)
    geometry = layout.cell_geometry(shape=(256, 320))
    assert len(geometry) == sum(layout.level_sizes((256, 320))) == 32 * 40 + 16 * 20 + 8 * 10
    assert geometry[40].tolist() == pytest.approx([0.5 / 40, 1.5 / 32, 40, 32])  # row 1, column 0 of level 0
    assert layout.cell_strides(shape=(256, 320))[-1] == 32


def test_grid_input_finds_the_grids_of_the_outputs():
    layout = GridLayout(num_grids=(40, 20, 10), strides=(8, 16, 32))
    assert layout.grid_input((256, 320), 32 * 40 + 16 * 20 + 8 * 10) == (256, 320)
    assert layout.grid_input((256, 320), layout.num_cells) == (320, 320)  # a graph traced on a square input
    with pytest.raises(ValueError, match="outputs with 7 grid cells do not fit grids"):
        layout.grid_input((256, 320), 7)


def brute_force_logit(layout: GridLayout, kernel: torch.Tensor, feats: torch.Tensor, cell: int) -> torch.Tensor:
    """One cell's mask logits (h, w) written out pixel by pixel from its level, row and column."""
    e, (h, w) = feats.shape[0], feats.shape[1:]
    logits = torch.einsum("e,ehw->hw", kernel[:e], feats)
    if not layout.offsets:
        return logits
    first = 0
    for gh, gw in layout.grids((4 * h, 4 * w)):  # the input of stride-4 mask features
        if cell < first + gh * gw:
            break
        first += gh * gw
    row, col = divmod(cell - first, gw)
    for i in range(h):
        for j in range(w):
            dx, dy = abs((j + 0.5) / w - (col + 0.5) / gw) * gw, abs((i + 0.5) / h - (row + 0.5) / gh) * gh
            logits[i, j] += kernel[e] * dx + kernel[e + 1] * dy
    return logits


def test_mask_logits_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    for offsets in (False, True):
        layout = GridLayout((4, 2), (8, 16), offsets)
        e = 3
        feats = torch.randn(2, e, 6, 10, generator=gen)  # not square: grids 2 x 4 and 1 x 2, x and y distances differ
        assert layout.level_sizes((24, 40)) == [8, 2]
        kernels = torch.randn(2, 10, layout.kernel_channels(e), generator=gen)
        cells = torch.tensor([[0, 5, 9], [8, 3, 7]])
        for grad in (False, True):  # inference adds the offset terms in place; under autograd it may not
            picked = torch.stack([k[c] for k, c in zip(kernels, cells)]).requires_grad_(grad)
            got = layout.mask_logits(picked, feats, cells)
            assert got.requires_grad == grad
            for b in range(2):
                for i, c in enumerate(cells[b].tolist()):
                    expected = brute_force_logit(layout, kernels[b, c], feats[b], c)
                    torch.testing.assert_close(got[b, i].detach(), expected)


def test_loss_masks_are_decodes_masks_for_the_same_cells():
    """The loss's mask logits of its positive cells are the logits decoding makes for those cells as candidates."""
    torch.manual_seed(0)
    model = SOLOv2Model("yolo11n-solo.yaml", nc=3, verbose=False)  # cell offsets on: the whole kernel layout
    layout = model.layout
    assert layout.offsets and layout.num_grids == (40, 20, 10) and model.init_criterion().layout == layout
    raw = model(torch.rand(2, 3, 128, 128))  # training mode: raw outputs
    kernels, feats = flatten_levels(raw["kernels"]), raw["mask_feats"]  # (2, R, E + 2), (2, E, 32, 32)
    pos = torch.zeros(2, layout.num_cells, dtype=torch.bool)
    cells = {0: [3, 1650, 2050], 1: [0, 1700, 2099]}  # every level, both images
    for b, c in cells.items():
        pos[b, c] = True
    loss_logits = positive_mask_logits(layout, kernels, feats, pos)  # (P, h, w) in pos.nonzero() order
    settings = DecodeSettings(layout, mask_thr=0.0, maskness_power=1)  # every pixel in every mask, none dropped
    for b, c in cells.items():
        scores = torch.zeros(1, layout.num_cells, 3)
        scores[0, c, range(3)] = torch.tensor([0.9, 0.8, 0.7])  # one class per cell: no Matrix NMS decay
        score, cls, probs = decode(scores, kernels[b : b + 1].detach(), feats[b : b + 1].detach(), settings, 0.1, 10)
        assert int((score > 0).sum()) == 3  # the three cells, then empty slots
        ours = loss_logits[[i for i, (ib, _) in enumerate(pos.nonzero().tolist()) if ib == b]].sigmoid()
        by_class = dict(zip(cls[0, :3].tolist(), probs[0, :3]))
        for k in range(3):  # class k is cell c[k]
            torch.testing.assert_close(by_class[k], ours[k].detach(), rtol=0, atol=1e-6)
