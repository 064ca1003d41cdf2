"""Export support: the SOLO constants travel in the export's metadata; optional packages are checked up front.

Ultralytics' `Exporter` traces the model; the head then returns its dense outputs (scores after point NMS, kernels,
mask features), so the exported graph is static and decoding runs in the same Python postprocess as for `.pt` models.
"""

from __future__ import annotations

import ast
from importlib.util import find_spec

EXPORT_FORMATS = ("torchscript", "onnx")  # formats whose exports SOLO loads back and tests
EXTRA_PACKAGES = {"onnx": ("onnx", "onnxruntime", "onnxslim")}  # the `export` extra
RUNTIME_PACKAGES = {".onnx": ("onnxruntime",)}


class MissingExtraError(ImportError):
    """An optional package of ultra-solo's `export` extra is not installed."""


class UnsupportedFormatError(ValueError):
    """An export format SOLO models cannot be loaded back from."""


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


def prepare_export(exporter, spec) -> None:
    """`on_export_start` callback: set the head's export outputs on the exporter's copy of the model, and store the
    model's `solo` constants (with the end2end conf, max_det and agnostic of an end2end `spec`) in the metadata.

    Args:
        exporter: Ultralytics' `Exporter`, after its dry run and before it traces `exporter.model`.
        spec (ExportSpec): What the exported graph returns.
    """
    exporter.model.model[-1].export = spec
    solo = exporter.model.yaml["solo"]
    if spec.decode is not None:
        solo = {**solo, "end2end": {"conf": spec.conf, "max_det": spec.max_det, "agnostic": spec.agnostic}}
    exporter.metadata["solo"] = solo


def metadata_solo(metadata: dict) -> dict | None:
    """Return the `solo` constants from an export's metadata (ONNX stores metadata values as strings)."""
    solo = metadata.get("solo")
    return ast.literal_eval(solo) if isinstance(solo, str) else solo
