"""Export through Ultralytics' `Exporter`: what the graph returns, the SOLO metadata, and the optional packages.

The exporter traces a copy of the model. `exporting` prepares `SOLO.export` around it: it checks the format and its
packages, marks the model as read by SOLO's decoding for the exporter's dry run (`network.solo_decoding`), and registers
an `on_export_start` callback that acts on the exporter's copy: it sets the head's export outputs (`ExportSpec`: the
dense outputs, or end2end detections decoded in the graph by the same `decode.decode` as the Python postprocess) and
writes the model's settings with its head's grid and kernel layout into the metadata (`solo`), from which
`SOLO("best.onnx")` decodes like the `.pt` (`network.decode_settings`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib.util import find_spec

import torch
from ultralytics.utils import DEFAULT_CFG_DICT

from .decode import DecodeSettings, decode
from .network import decode_settings, solo_decoding

EXPORT_FORMATS = ("torchscript", "onnx")  # formats whose exports SOLO loads back and tests
EXTRA_PACKAGES = {"onnx": ("onnx", "onnxruntime", "onnxslim")}  # the `export` extra
RUNTIME_PACKAGES = {".onnx": ("onnxruntime",)}


class MissingExtraError(ImportError):
    """An optional package of ultra-solo's `export` extra is not installed."""


class UnsupportedFormatError(ValueError):
    """An export format SOLO models cannot be loaded back from."""


@dataclass(frozen=True)
class ExportSpec:
    """What an exported graph returns: the dense outputs (`decode` None) or end2end detections decoded in the graph."""

    decode: DecodeSettings | None = None
    conf: float = 0.001
    max_det: int = 300
    agnostic: bool = False

    def outputs(self, dense: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The graph's outputs from the head's dense outputs."""
        if self.decode is None:
            return dense
        return decode(*dense, self.decode, self.conf, self.max_det, agnostic=self.agnostic)


def require(packages: tuple[str, ...], purpose: str) -> None:
    """Raise `MissingExtraError` naming the extra to install when any of `packages` cannot be imported."""
    missing = [p for p in packages if find_spec(p) is None]
    if missing:
        raise MissingExtraError(f"{purpose} needs {', '.join(missing)}: pip install 'ultra-solo[export]'")


def check_export(fmt: str) -> None:
    """Refuse formats SOLO cannot load back, and formats whose packages are missing (instead of auto-installing)."""
    if fmt not in EXPORT_FORMATS:
        raise UnsupportedFormatError(
            f"SOLO models export to {', '.join(EXPORT_FORMATS)}; format='{fmt}' is not supported"
        )
    require(EXTRA_PACKAGES.get(fmt, ()), f"format='{fmt}' export")


def export_spec(model, nms: bool, kwargs: dict, overrides: dict) -> ExportSpec:
    """What the graph of `SOLO.export(nms=nms, **kwargs)` returns: with `nms` the end2end detections, with the conf
    (default 0.001: the graph's cost does not depend on it), max_det and agnostic_nms (or single_cls) asked for."""
    if not nms:
        return ExportSpec()
    return ExportSpec(
        decode=decode_settings(model),
        conf=0.001 if kwargs.get("conf") is None else kwargs["conf"],
        max_det=kwargs.get("max_det", DEFAULT_CFG_DICT["max_det"]),
        agnostic=bool(kwargs.get("agnostic_nms") or overrides.get("single_cls")),
    )


def prepare_export(exporter, spec: ExportSpec) -> None:
    """`on_export_start` callback: set the head's export outputs on the exporter's copy of the model, and store the
    model's settings and its head's layout (with an end2end `spec`'s conf, max_det and agnostic) in the metadata.

    Args:
        exporter: Ultralytics' `Exporter`, after its dry run and before it traces `exporter.model`.
        spec (ExportSpec): What the exported graph returns.
    """
    model = exporter.model
    model.model[-1].export = spec
    solo = {**model.settings.as_dict(), **model.layout.as_dict()}
    if spec.decode is not None:
        solo["end2end"] = {"conf": spec.conf, "max_det": spec.max_det, "agnostic": spec.agnostic}
    exporter.metadata["solo"] = solo


@contextmanager
def exporting(solo, kwargs: dict) -> Iterator[dict]:
    """Prepare a `SOLO` (the `Model`) for `Model.export(**kwargs)`; yields the arguments to pass it.

    Checks the format (default 'torchscript') and its packages, takes `nms` out of the arguments (SOLO decodes in the
    graph itself, not in Ultralytics' YOLO NMS wrapper) and registers `prepare_export` for this export only.
    """
    kwargs = {"format": "torchscript", **kwargs}
    check_export(str(kwargs["format"]).lower())
    spec = export_spec(solo.model, kwargs.pop("nms", None), kwargs, solo.overrides)
    callback = partial(prepare_export, spec=spec)
    solo.add_callback("on_export_start", callback)
    try:
        with solo_decoding(solo.model):  # the exporter's dry run is an eval pass of (a copy of) this model
            yield kwargs
    finally:
        solo.callbacks["on_export_start"].remove(callback)
