"""Binary masks from the letterboxed input size to the original image size, bitwise as Ultralytics' validator has them.

For `save_json`, Ultralytics' `SegmentationValidator.scale_preds` cuts the letterbox padding off every mask, upsamples
the 0/1 masks bilinearly (`ops.scale_masks`, float32) to the original size and casts them with `.byte()`, which keeps
an output pixel only where the interpolation gives exactly 1. At conf 0.001 that is up to 300 float masks of the
original size per image, the validator's largest cost with `save_json` (README, "What validation costs").

Each output pixel interpolates two rows and two columns of the mask (one where the other's weight is 0). If all of
those with a nonzero weight are 1, its value is the one an all-ones mask gets there (the CPU kernel computes a pixel
alike in every channel: the tests compare 24 masks at once, the README 188 images' 300 each); if one of them is 0,
its value is at most 1 minus that tap's weight, far below 1 when every nonzero weight product is at least `MIN_WEIGHT`
(float32 rounding moves it by a few units of 2**-24). So where an all-ones mask upsamples to exactly 1 everywhere and
the weights are not tiny, the cast masks are the AND of each pixel's taps: row and column gathers over each mask's
own window, no float masks. The weights are PyTorch's own on CPU, read off its interpolation of one-hot rows; other
sizes and devices return None and the validator uses Ultralytics' path.

Shape shorthand in this module:
    n: masks; h, w: letterboxed input size; hc, wc: its content (padding cut); H, W: the original image size
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from .resample import mask_boxes

MIN_WEIGHT = 2.0**-18  # the smallest nonzero weight product allowed: 64 units of float32 rounding at 1


def letterbox_content(size: tuple[int, int], shape: tuple[int, int], ratio_pad) -> tuple[int, int, int, int]:
    """Rows top:bottom and columns left:right of the original image's content in a letterboxed input of `size` (h, w),
    as Ultralytics' `ops.scale_masks` cuts them, from the original `shape` (H, W) and the letterbox's ratio_pad
    ((gain_h, gain_w), (pad_w, pad_h))."""
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    return top, top + max(round(shape[0] * gain_h), 1), left, left + max(round(shape[1] * gain_w), 1)


def bilinear_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """For each of `n_out` outputs of PyTorch's bilinear interpolation (CPU) along one axis of `n_in` inputs: its first
    and last input with a nonzero weight (n_out,) each (the same one where only one has a weight), and the smallest
    nonzero weight of all. The weights are the interpolation's own: `F.interpolate` of n_in one-hot rows."""
    one_hot = torch.eye(n_in)[None, :, :, None]  # (1, n_in, n_in, 1): channel k is input k alone
    weights = F.interpolate(one_hot, (n_out, 1), mode="bilinear", align_corners=False)[0, :, :, 0]  # (n_in, n_out)
    tapped = weights > 0
    first = tapped.int().argmax(0)
    last = n_in - 1 - tapped.flip(0).int().argmax(0)
    return first, last, float(weights[tapped].min())


@lru_cache(maxsize=64)
def taps_if_exact(content: tuple[int, int], shape: tuple[int, int]) -> tuple | None:
    """The row and column taps (`bilinear_taps`) from a content of size `content` (hc, wc) to `shape` (H, W), or None
    where their ANDs may differ from Ultralytics' cast masks: an all-ones mask not upsampled to exactly 1 everywhere,
    or a nonzero weight product below `MIN_WEIGHT` (module docstring)."""
    rows, cols = bilinear_taps(content[0], shape[0]), bilinear_taps(content[1], shape[1])
    ones = F.interpolate(torch.ones(1, 1, *content), shape, mode="bilinear", align_corners=False)
    exact = rows[2] * cols[2] >= MIN_WEIGHT and bool((ones == 1).all())
    return (rows[:2], cols[:2]) if exact else None


def rescaled_masks(masks: torch.Tensor, shape: tuple[int, int], ratio_pad, chunk: int = 16) -> torch.Tensor | None:
    """`ops.scale_masks(masks[None], shape, ratio_pad)[0].byte()` for bool masks (n, h, w) on CPU: uint8 (n, H, W),
    bitwise the same, or None where that is not sure (`taps_if_exact`; other devices; no `ratio_pad`).

    Masks are taken `chunk` at a time in order of their box area, each chunk over the output window whose taps all lie
    in the union of its masks' boxes (every other output pixel has a 0 tap).
    """
    n, h, w = masks.shape
    H, W = shape[:2]
    if masks.device.type != "cpu" or masks.dtype != torch.bool:
        return None
    if (h, w) == (H, W):
        return masks.view(torch.uint8)  # Ultralytics keeps masks of the original size as they are
    if ratio_pad is None:
        return None
    top, bottom, left, right = letterbox_content((h, w), (H, W), ratio_pad)
    content = masks[:, top:bottom, left:right]  # (n, hc, wc)
    if content.shape[1:] == (H, W):
        return content.contiguous().view(torch.uint8)  # an interpolation to the same size copies
    taps = taps_if_exact(tuple(content.shape[1:]), (H, W))
    if taps is None:
        return None
    out = torch.zeros((n, H, W), dtype=torch.uint8)
    boxes = mask_boxes(content).long()  # (n, 4) x1, y1, x2, y2 (exclusive), zeros for empty masks
    filled = (boxes[:, 2] > 0).nonzero()[:, 0]
    filled = filled[((boxes[filled, 2] - boxes[filled, 0]) * (boxes[filled, 3] - boxes[filled, 1])).argsort()]
    content = content.view(torch.uint8)  # 0/1 bytes: `&` of two taps is their AND
    for i in range(0, len(filled), chunk):
        ids = filled[i : i + chunk]
        window = boxes[ids, :2].amin(0).tolist() + boxes[ids, 2:].amax(0).tolist()  # x1, y1, x2, y2 over the chunk
        paste_window(out, ids, content, window, *taps)
    return out


def paste_window(out: torch.Tensor, ids: torch.Tensor, content: torch.Tensor, window: list[int], rows, cols) -> None:
    """Write into `out` (n, H, W) the ANDs of the taps (`bilinear_taps` of rows and columns) of the masks `ids` of
    `content` (n, hc, wc) 0/1, over the output pixels whose taps lie in `window` (x1, y1, x2, y2 in content pixels)."""
    x1, y1, x2, y2 = window
    (r0, r1), (c0, c1) = rows, cols
    ys = slice(int(torch.searchsorted(r0, y1)), int(torch.searchsorted(r1, y2)))  # outputs whose rows lie in y1:y2
    xs = slice(int(torch.searchsorted(c0, x1)), int(torch.searchsorted(c1, x2)))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    crop = content[ids, y1:y2, x1:x2].transpose(1, 2).contiguous()  # (c, x2 - x1, y2 - y1): columns as rows
    both = crop.index_select(1, c0[xs] - x1) & crop.index_select(1, c1[xs] - x1)  # (c, W_win, y2 - y1)
    both = both.transpose(1, 2).contiguous()  # (c, y2 - y1, W_win)
    both = both.index_select(1, r0[ys] - y1) & both.index_select(1, r1[ys] - y1)  # (c, H_win, W_win)
    for k, j in enumerate(ids.tolist()):  # one copy per mask: several times faster here than `out[ids, ys, xs] = both`
        out[j, ys, xs] = both[k]
