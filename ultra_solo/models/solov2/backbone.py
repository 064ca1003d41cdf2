"""ImageNet weights for torchvision backbone rows, taken only from disk: nothing is ever downloaded.

The YAML builds `TorchVision` rows with `weights=None` (torchvision's `DEFAULT` would download). Weights are then
loaded here from the torch hub cache, where torchvision keeps what it downloaded earlier, or from a file given as
`pretrained=path/to/resnet18.pth`. Without either, one warning is logged and the backbone trains from scratch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from ultralytics.utils import LOGGER

from .cfg import resolve_scale

_warned: set[str] = set()


def torchvision_rows(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Return the `TorchVision` rows of a SOLO model with the torchvision model name each one wraps."""
    rows = resolve_scale(model.yaml)
    return [(model.model[i], r[3][1]) for i, r in enumerate(rows["backbone"] + rows["head"]) if r[2] == "TorchVision"]


def cached_weights_file(name: str) -> Path:
    """Return where torchvision keeps the downloaded `DEFAULT` ImageNet weights of model `name`."""
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Read a torchvision state dict (optionally wrapped in a `state_dict` or `model` key) from `file`."""
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"pretrained backbone weights '{file}' could not be read: {e}") from e
    sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"pretrained backbone weights '{file}' are not a state dict of tensors")
    return sd


def copy_in_order(row: nn.Module, sd: dict[str, torch.Tensor], source: Path) -> int:
    """Copy a full torchvision state dict into an unwrapped (truncated) row: same tensors, same order, fewer keys."""
    dst = row.m.state_dict()
    src = list(sd.values())[: len(dst)]  # truncation only drops trailing modules (avgpool, fc)
    if len(src) < len(dst) or any(a.shape != b.shape for a, b in zip(dst.values(), src)):
        raise ValueError(f"pretrained backbone weights '{source}' do not match the {type(row.m).__name__} backbone")
    row.m.load_state_dict(dict(zip(dst, src)))
    return len(dst)


def load_imagenet_weights(model: nn.Module, pretrained: bool | str | Path = True) -> int:
    """Load ImageNet weights into every `TorchVision` row of `model`.

    Args:
        model (nn.Module): A SOLO model.
        pretrained (bool | str | Path): False skips; True looks in the torch hub cache; a path names a state dict file.

    Returns:
        (int): Number of tensors loaded (0 when training from scratch).

    Raises:
        FileNotFoundError: When `pretrained` names a file that does not exist.
        ValueError: When the file is not a matching torchvision state dict.
    """
    if pretrained is False:
        return 0
    loaded = 0
    for row, name in torchvision_rows(model):
        file = Path(pretrained) if isinstance(pretrained, (str, Path)) else cached_weights_file(name)
        if isinstance(pretrained, (str, Path)) and not file.is_file():
            raise FileNotFoundError(f"pretrained backbone weights '{file}' not found")
        if not file.is_file():
            if name not in _warned:
                _warned.add(name)
                LOGGER.warning(
                    f"ImageNet weights for {name} not found at {file}; training the backbone from scratch. "
                    f"Place the torchvision file there or pass pretrained=path/to/{file.name}."
                )
            continue
        loaded += copy_in_order(row, read_state_dict(file), file)
        model.weights_source = f"ImageNet {name} backbone ({file})"
        LOGGER.info(f"Loaded ImageNet weights for {name} from {file}")
    return loaded
