"""Mask resampling: mask probabilities at the mask-feature stride to thresholded masks and boxes at input resolution.

SOLO's masks are bilinear upsamplings of probabilities (n, h, w) thresholded at `mask_thr`. Where the scale is one
power of two for both sides (`windowable`), only the windows that hold pixels above the threshold are upsampled, with
the values and boxes of upsampling everything (tested bitwise on synthetic masks). Up to the last bit: PyTorch's kernel
rounds a few outputs one unit differently where a crop moves them between its vectorised and scalar lanes, which can
flip a pixel lying exactly at the threshold (one pixel of yolo11n-solo's 54,000 validation masks on package-seg-small,
with the same metrics; `benchmarks/val_speed.py`). Boxes come from the masks' rows and columns (SOLO predicts no
boxes).

Shape shorthand in this module:
    n: masks; h, w: mask-feature height and width; H, W: the size masks are upsampled to
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def above(x: torch.Tensor, thr: float) -> torch.Tensor:
    """`x > thr` as 0/1 values of x's dtype; `.bool()` of it is the bool mask.

    On CPU a comparison into x's own dtype is several times faster than one into bool, and so is casting floats to bool
    rather than bool to floats (`benchmarks/ops.py`). Traced graphs compare as usual.
    """
    if torch.jit.is_tracing():
        return (x > thr).to(x.dtype)
    return torch.gt(x, thr, out=torch.empty_like(x))


def upsample_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample mask probabilities (n, h, w) bilinearly to `size`, (n, *size)."""
    if len(probs) == 0:
        return probs.new_zeros((0, *size))
    return F.interpolate(probs[None], size, mode="bilinear", align_corners=False)[0]


def windowable(probs: torch.Tensor, size: tuple[int, int]) -> int:
    """The scale from mask features (n, h, w) to `size` if it is one power of two for both sides, else 0.

    Then the bilinear upsampling of a window of the features, offset by whole pixels, has the very interpolation weights
    of upsampling them all (exact scale), and every output pixel outside the window of rows and columns that hold a
    probability above the threshold, one more on each side, interpolates values at or below it: `feature_windows`.
    """
    h, w = probs.shape[1:]
    scale = size[0] // h
    return scale if tuple(size) == (scale * h, scale * w) and scale & (scale - 1) == 0 else 0


def feature_windows(probs: torch.Tensor, thr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask, the window of the mask features that upsampling needs to find its pixels above `thr` (`windowable`).

    Returns:
        (tuple): Windows (n, 4) as rows r0:r1 and columns c0:c1 (the rows and columns holding a probability above
            `thr`, one more on each side), and (n,) whether the mask has any probability above `thr`.
    """
    h, w = probs.shape[1:]
    x1, y1, x2, y2 = boxes_above(probs, thr).long().unbind(1)
    windows = torch.stack(((y1 - 1).clamp_min(0), (y2 + 1).clamp_max(h), (x1 - 1).clamp_min(0), (x2 + 1).clamp_max(w)))
    return windows.T, x2 > 0


def upsample_masks(probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int = 32) -> torch.Tensor:
    """Upsample mask probabilities (n, h, w) bilinearly to `size` and threshold them, `chunk` masks at a time.

    Where `windowable`, only the window that holds every mask's pixels is upsampled; the masks are the same.
    """
    n, h, w = probs.shape
    out = torch.zeros((n, *size), dtype=torch.bool, device=probs.device)
    r0, r1, c0, c1 = 0, h, 0, w  # window of the mask features
    if n and windowable(probs, size):
        window, filled = feature_windows(probs.amax(0, keepdim=True), thr)  # of the pixels any mask holds
        if not filled[0]:
            return out
        r0, r1, c0, c1 = window[0].tolist()
    y0, y1, x0, x1 = r0 * size[0] // h, r1 * size[0] // h, c0 * size[1] // w, c1 * size[1] // w
    crop = probs[:, r0:r1, c0:c1]
    for i in range(0, n, chunk):
        out[i : i + chunk, y0:y1, x0:x1] = above(upsample_probs(crop[i : i + chunk], (y1 - y0, x1 - x0)), thr).bool()
    return out


def upsampled_mask_boxes(
    probs: torch.Tensor, size: tuple[int, int], thr: float, masks: torch.Tensor | None = None, chunk: int = 8
) -> torch.Tensor:
    """`mask_boxes(upsample_masks(probs, size, thr))`, (n, 4), without upsampling whole masks where `windowable`.

    Validation boxes up to 300 masks per image. Each box is read off the few output rows and columns around its mask's
    edges (`edge_boxes`; `masks`, bool (n, h, w), may give `probs > thr` if the caller has it); the masks whose edges
    that leaves undecided are upsampled over their own windows.
    """
    scale = windowable(probs, size)
    if not scale:
        return mask_boxes(upsample_masks(probs, size, thr))
    boxes, sure = edge_boxes(probs, scale, thr, masks)
    unsure = (~sure).nonzero().view(-1)
    if len(unsure):
        rest = probs.new_zeros((len(unsure), 4))
        for ids, up, origin in upsampled_windows(probs[unsure], size, thr, chunk):
            rest[ids] = in_output(boxes_above(up, thr), origin)
        boxes[unsure] = rest
    return boxes


def edge_boxes(
    probs: torch.Tensor, scale: int, thr: float, masks: torch.Tensor | None = None, margin: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (n, 4) of masks (n, h, w) upsampled bilinearly by `scale` (a power of two) and thresholded at `thr`, from
    the output rows and columns next to each mask's first and last rows and columns above `thr` (`masks`, bool
    (n, h, w), is `probs > thr`, computed here if not given), and (n,) whether each box is sure.

    An output row interpolates two rows of the features (the border rows repeated past the border) with weights
    (j + 0.5) / scale, j < scale, so the rows before the pair (first - 1, first) of the first feature row above `thr`
    stay at or below it: the box's first row is among the 2 x scale rows of that pair and the next, its last among
    those of (last - 1, last) and (last, last + 1); their maxima over the output's columns are `line_maxima`'s. A box
    is sure when each of its four edges is decided by values farther than `margin` from `thr`, so float rounding (here
    and in PyTorch's kernel) cannot move it; for the others, which a weak edge can also move farther inside,
    `upsampled_mask_boxes` upsamples.
    """
    rows, cols = filled_lines(above(probs, thr).bool() if masks is None else masks)
    y1, y2, sure_rows = edge_lines(probs, rows, scale, thr, margin)
    x1, x2, sure_cols = edge_lines(probs.transpose(1, 2), cols, scale, thr, margin)
    return torch.stack((x1, y1, x2, y2), 1).float(), sure_rows & sure_cols


def filled_lines(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows (n, h) and columns (n, w) of bool masks (n, h, w) hold a pixel, as 0/1 of an integer dtype.

    Reads the masks' bytes 8 at a time where w is a multiple of 8 (mask features of inputs that are multiples of 32):
    a row holds a pixel if one of its int64 words is nonzero, and summing the words over the rows counts every
    column's pixels in its own byte while h < 256 (no carry). About 6x faster on CPU than byte-wise maxima.
    """
    n, h, w = masks.shape
    m = masks.view(torch.uint8)
    if w % 8 or h > 255 or not m.is_contiguous():
        return m.amax(2), m.amax(1)
    words = m.view(n, h, w // 8, 8).view(torch.int64)[..., 0]  # (n, h, w / 8): 8 bytes of a row each
    return (words.amax(2) > 0).to(torch.uint8), (words.sum(1).view(torch.uint8).view(n, w) > 0).to(torch.uint8)


def edge_lines(probs: torch.Tensor, filled: torch.Tensor, scale: int, thr: float, margin: float):
    """`edge_boxes`' first and last output rows (n,) (the last one's far edge) of masks (n, h, w) whose rows `filled`
    (n, h) hold a value above `thr` (1) or not (0), and (n,) whether both are sure. Masks with no value above `thr`
    get (0, 0), sure: upsampling leaves them empty.

    The maxima over the output's columns of the 2 x scale output rows around each edge come from the three feature
    rows around it (`line_maxima`): values within float rounding of PyTorch's interpolation, far below `margin`.
    """
    n, h, w = probs.shape
    first, last = filled.argmax(1), h - 1 - filled.flip(1).argmax(1)  # (n,)
    around = torch.stack((first, last), 1)[..., None] + torch.arange(-1, 2, device=probs.device)  # (n, 2, 3)
    rows = picked_rows(probs, around.view(n, 6).clamp(0, h - 1)).reshape(n, 2, 3, w)
    line_max = line_maxima(rows, scale)  # (n, 2, 2s)
    over, under = line_max > thr + margin, line_max < thr - margin
    k = torch.arange(2 * scale, device=probs.device)  # output row of k: scale * feature row - scale / 2 + k
    top, bottom = over[:, 0].int().argmax(1), 2 * scale - 1 - over[:, 1].flip(1).int().argmax(1)  # (n,)
    sure = (
        over.any(2).all(1) & (under[:, 0] | (k >= top[:, None])).all(1) & (under[:, 1] | (k <= bottom[:, None])).all(1)
    )
    empty = filled.amax(1) == 0
    y1 = (scale * first - scale // 2 + top).clamp_min(0) * ~empty
    y2 = (scale * last - scale // 2 + bottom + 1).clamp_max(scale * h) * ~empty
    return y1, y2, sure | empty


def line_maxima(rows: torch.Tensor, scale: int) -> torch.Tensor:
    """Maxima (..., 2 scale) over the output columns of the 2 x scale output rows that bilinear upsampling by `scale`
    (a power of two) puts between three feature rows (..., 3, w): those between the first two, then the last two.

    Between two feature rows (columns), output row (column) j < scale weighs the second by (j + 0.5) / scale. An
    output row's maximum lies at a border column, equal to the border value, or at a pair of columns' extreme weights
    1 / (2 scale) and 1 - 1 / (2 scale), the interpolation being linear in between: the feature rows are interpolated
    at those 2w columns, then at the row weights. Elementwise, on (..., 2, scale, 2w) values: as products with
    matrices of column and row weights it took about twice as long on CPU (`benchmarks/ops.py`).
    """
    u = 0.5 / scale
    left, right = rows[..., :-1], rows[..., 1:]  # (..., 3, w - 1)
    borders = (rows[..., :1], rows[..., -1:])
    columns = torch.cat((torch.lerp(left, right, u), torch.lerp(right, left, u), *borders), -1)  # (..., 3, 2w)
    t = (torch.arange(scale, device=rows.device, dtype=rows.dtype)[:, None] + 0.5) / scale  # (scale, 1)
    lines = torch.lerp(columns[..., :2, None, :], columns[..., 1:, None, :], t)  # (..., 2, scale, 2w)
    return lines.amax(-1).flatten(-2)


def picked_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows `x[i, index[i]]` (n, k, w) of `x` (n, h, w) at `index` (n, k): whole rows copied where `x` is contiguous,
    and for the columns of a contiguous tensor (`x` its transpose) one gather along them, each several times faster
    on CPU than a gather of the strided rows."""
    n, h, w = x.shape
    k = index.shape[1]
    if x.is_contiguous():
        flat = (index + torch.arange(n, device=x.device)[:, None] * h).view(-1)  # (n * k,) rows of x.view(n * h, w)
        return x.view(n * h, w).index_select(0, flat).view(n, k, w)
    if x.transpose(1, 2).is_contiguous():
        return x.transpose(1, 2).gather(2, index[:, None, :].expand(n, w, k)).transpose(1, 2)
    return x.gather(1, index[..., None].expand(n, k, w))


def upsampled_masks_and_boxes(
    probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """`upsample_masks(probs, size, thr)` (n, *size) and their `mask_boxes` (n, 4), each mask upsampled over its own
    window only (`windowable`): validation with native-resolution masks upsamples up to 300 masks per image, whose
    windows together cover a fraction of what one window over all of them does."""
    if not windowable(probs, size):
        masks = upsample_masks(probs, size, thr)
        return masks, mask_boxes(masks)
    masks = torch.zeros((len(probs), *size), dtype=torch.bool, device=probs.device)
    boxes = probs.new_zeros((len(probs), 4))
    for ids, up, origin in upsampled_windows(probs, size, thr, chunk):
        crop = above(up, thr)  # (m, H_c, W_c) 0/1
        boxes[ids] = in_output(extent_boxes(crop.amax(2), crop.amax(1)), origin)
        rows = origin[:, 0:1] + torch.arange(crop.shape[1], device=probs.device)  # (m, H_c)
        cols = origin[:, 1:2] + torch.arange(crop.shape[2], device=probs.device)  # (m, W_c)
        masks[ids[:, None, None], rows[:, :, None], cols[:, None, :]] = crop.bool()
    return masks, boxes


def in_output(box: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Boxes (m, 4) found in crops whose origins (m, 2) are row and column in output pixels, moved to the output; a
    mask empty once upsampled keeps the zero box."""
    return (box + origin.flip(1).repeat(1, 2)) * (box[:, 2:3] > 0)


def upsampled_windows(probs: torch.Tensor, size: tuple[int, int], thr: float, chunk: int):
    """Yield the masks (n, h, w) that hold a probability above `thr`, `chunk` at a time in order of window area, each
    upsampled to `size` over a crop holding its own window (`window_crops`; `size` must be `windowable`).

    Yields:
        (tuple): Indices (m,) of the masks, their upsampled crops (m, H_c, W_c), and the crops' origins (m, 2) as row
            and column in `size`'s pixels.
    """
    scale = windowable(probs, size)
    windows, filled = feature_windows(probs, thr)
    index = filled.nonzero().view(-1)  # (m,) masks with a probability above thr
    extent = windows[index, 1::2] - windows[index, 0::2]  # (m, 2) window heights and widths
    index = index[extent.prod(1).argsort()]
    for i in range(0, len(index), chunk):
        ids = index[i : i + chunk]
        yield ids, *window_crops(probs[ids], windows[ids], scale)


def window_crops(probs: torch.Tensor, windows: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (n, h, w) upsampled by `scale` (a power of two) over same-size crops, each the largest window's size and
    holding its mask's own window: a crop larger than the window, offset by whole pixels, gives the window's pixels the
    values upsampling everything gives them (module docstring), and its other pixels stay at or below the threshold
    (`windowable`).

    Returns:
        (tuple): Upsampled crops (n, hc * scale, wc * scale) and their origins (n, 2), row and column, in output pixels.
    """
    h, w = probs.shape[1:]
    r0, r1, c0, c1 = windows.unbind(1)  # (n,) each
    hc, wc = int((r1 - r0).max()), int((c1 - c0).max())  # crop size
    top, left = r0.clamp_max(h - hc), c0.clamp_max(w - wc)  # (n,) crop origins: inside the features, over the window
    rows = top[:, None] + torch.arange(hc, device=probs.device)  # (n, hc)
    cols = left[:, None] + torch.arange(wc, device=probs.device)  # (n, wc)
    crops = probs[torch.arange(len(probs), device=probs.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return upsample_probs(crops, (hc * scale, wc * scale)), torch.stack((top, left), 1) * scale


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Return xyxy boxes (n, 4) enclosing binary masks (n, H, W), edges on pixel borders; zeros for empty masks.

    Reduces uint8 views with `amax`, not `torchvision.ops.masks_to_boxes`, whose boolean `any` reductions are several
    times slower on CPU (`benchmarks/ops.py`); every prediction's box comes from its mask.
    """
    m = masks.view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).to(torch.uint8)
    return extent_boxes(m.amax(2), m.amax(1))


def boxes_above(probs: torch.Tensor, thr: float) -> torch.Tensor:
    """`mask_boxes(probs > thr)` from the maxima of rows and columns, without thresholding every pixel."""
    return extent_boxes(above(probs.amax(2), thr), above(probs.amax(1), thr))


def extent_boxes(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Boxes (n, 4) from 0/1 values (n, H) and (n, W) that mark the rows and columns holding mask pixels."""
    y1, x1 = rows.argmax(1), cols.argmax(1)  # first filled row / column
    y2, x2 = rows.shape[1] - rows.flip(1).argmax(1), cols.shape[1] - cols.flip(1).argmax(1)  # last one's far edge
    return torch.stack((x1, y1, x2, y2), 1).float() * rows.amax(1, keepdim=True)  # empty masks: 0
