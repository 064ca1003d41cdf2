"""Model YAML lookup and scale resolution for SOLO models.

Ultralytics' `yaml_model_load` only searches its own package, so SOLO resolves its names itself, with both naming
styles: `solov2-n.yaml` is the family file `solov2.yaml` at scale `n`, and `yolo11n-solo.yaml`, like Ultralytics'
`yolo11n-seg.yaml`, is `yolo11-solo.yaml` at scale `n`.
"""

from __future__ import annotations

import re
from copy import deepcopy
from pathlib import Path

from ultralytics.utils import YAML

_SCALED_NAMES = (
    re.compile(r"(?P<base>yolo\w*?\d+)(?P<scale>[nslmx])(?P<task>-\w+)"),  # yolo11n-solo -> (yolo11-solo, n)
    re.compile(r"(?P<base>.+)-(?P<scale>[a-z])(?P<task>)"),  # solov2-n -> (solov2, n)
)


_PACKAGE = Path(__file__).resolve().parents[2]  # .../ultra_solo


def model_yaml_dir() -> Path:
    """Return the folder of the shipped model YAMLs: `ultra_solo/cfg/models` when installed, else the checkout's."""
    installed = _PACKAGE / "cfg" / "models"  # the top-level cfg/ ships as ultra_solo/cfg (pyproject.toml)
    return installed if installed.is_dir() else _PACKAGE.parent / "cfg" / "models"


def find_model_yaml(cfg: str | Path) -> tuple[Path, str]:
    """Find a SOLO model YAML by path or by shipped name and return it with the scale its name selects.

    Args:
        cfg (str | Path): A path to a YAML file, or a shipped name such as `solov2-n.yaml` or `solov2.yaml`.

    Returns:
        (tuple[Path, str]): The family YAML file and the scale letter ('' when the name carries none).

    Raises:
        FileNotFoundError: When neither the path nor a shipped file of that name exists.
    """
    path = Path(cfg)
    match = next((m for m in (r.fullmatch(path.stem) for r in _SCALED_NAMES) if m), None)
    candidates = [path, model_yaml_dir() / path.name]
    if match:
        family = f"{match['base']}{match['task']}{path.suffix}"
        candidates += [path.with_name(family), model_yaml_dir() / family]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, match["scale"] if match else ""
    shipped = sorted(p.name for p in model_yaml_dir().glob("*.yaml"))
    raise FileNotFoundError(f"model YAML '{cfg}' not found (shipped: {shipped}, e.g. 'solov2-n.yaml')")


def load_model_yaml(cfg: str | Path) -> dict:
    """Load a SOLO model YAML into a dict that records its file and scale, like Ultralytics' `yaml_model_load`."""
    file, scale = find_model_yaml(cfg)
    d = YAML.load(file)
    scales = d.get("scales") or {}
    if scale not in scales:
        if scale and file.stem != Path(cfg).stem:  # 'solov2-x.yaml' asked for a scale the family lacks
            raise ValueError(f"scale '{scale}' of '{cfg}' is not one of {list(scales)} in {file}")
        scale = next(iter(scales), "")
    d["scale"] = scale
    d["yaml_file"] = str(cfg)
    return d


def resolve_scale(d: dict) -> dict:
    """Return a copy of a model dict with the scale's named values substituted into its rows.

    A scale is Ultralytics' `[depth, width, max_channels]` list (as in `yolo11-seg.yaml`, so rows of Ultralytics
    modules scale as they do there), or a mapping: every row argument that is a string naming one of its keys is
    replaced by the value, and optional `depth`, `width` and `max_channels` keys are the compound scaling constants.
    Row arguments `nc` become the class count.

    Args:
        d (dict): Model dict as returned by `load_model_yaml` (or stored in a checkpoint's `model.yaml`).

    Returns:
        (dict): The resolved dict; its `scales` holds only the chosen scale as `[depth, width, max_channels]`.
    """
    d = deepcopy(d)
    scales = d.get("scales") or {}
    scale = d.get("scale") or next(iter(scales), "")
    values = scales.get(scale, {})
    if isinstance(values, (list, tuple)):
        values = dict(zip(("depth", "width", "max_channels"), values))
    values = dict(values)
    values["nc"] = d["nc"]
    for row in d["backbone"] + d["head"]:
        row[3] = [values.get(a, a) if isinstance(a, str) else a for a in row[3]]
    d["scale"] = scale
    d["scales"] = {scale: [values.get("depth", 1.0), values.get("width", 1.0), values.get("max_channels", 1 << 20)]}
    return d
