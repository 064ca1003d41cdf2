"""Name the label rows behind a dataset error Ultralytics reports without naming any file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ultralytics.data.utils import IMG_FORMATS, img2label_paths


class DatasetError(ValueError):
    """A dataset problem, reported in one line that names the files to fix."""


def image_files(img_path: str | Path | list) -> list[Path]:
    """Images of a dataset split given as a folder, a .txt list of images, or a list of either."""
    files = []
    for entry in map(Path, img_path if isinstance(img_path, list) else [img_path]):
        if entry.suffix == ".txt":
            files += [entry.parent / line.strip() for line in entry.read_text().splitlines() if line.strip()]
        else:
            files += [p for p in entry.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS]
    return files


def non_polygon_rows(img_path: str | Path | list) -> list[str]:
    """'file:line' of every label row with fewer than 3 polygon points (4 numbers after the class: a box)."""
    rows = []
    for file in map(Path, img2label_paths(image_files(img_path))):
        if file.is_file():
            rows += [
                f"{file}:{n}" for n, line in enumerate(file.read_text().splitlines(), 1) if 1 < len(line.split()) < 7
            ]
    return rows


@contextmanager
def naming_non_polygon_rows(img_path: str | Path | list) -> Iterator[None]:
    """Re-raise Ultralytics' 'equal numbers of boxes and segments' error as a `DatasetError` naming the rows."""
    try:
        yield
    except ValueError as e:
        if "equal numbers of boxes and segments" not in str(e):
            raise
        rows = non_polygon_rows(img_path)
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise DatasetError(
            f"segment labels need polygons of at least 3 points; these rows have fewer: {', '.join(rows[:5])}{more}"
        ) from None
