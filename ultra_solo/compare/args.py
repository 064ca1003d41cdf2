"""The argument-identity check: compared runs may differ only in the model and where they write."""

from __future__ import annotations

from pathlib import Path

from ultralytics.utils import YAML

RUN_SPECIFIC = frozenset({"model", "name", "save_dir"})  # the model itself and its output folder


class ArgumentMismatchError(ValueError):
    """Two runs of a comparison were (or would be) trained with different arguments."""


class SeedsError(ValueError):
    """`seeds=` is malformed or given together with `seed=`."""


def check_same_args(files: dict[str, Path], per_run: set[str] | frozenset[str] = frozenset()) -> dict:
    """Check that the runs' `args.yaml` files agree on every key but the model and output names (and `per_run`).

    Args:
        files (dict[str, Path]): Run name -> its `args.yaml`.
        per_run (set[str]): Keys each run sets for itself (`seed` in a comparison with seeds).

    Returns:
        (dict): The shared arguments (without the per-run keys).

    Raises:
        ArgumentMismatchError: Naming the first differing key and its values.
    """
    skip = RUN_SPECIFIC | set(per_run)
    args = {name: {k: v for k, v in YAML.load(f).items() if k not in skip} for name, f in files.items()}
    (first, reference), *others = args.items()
    for name, a in others:
        for key in sorted(reference.keys() | a.keys()):
            if reference.get(key) != a.get(key):
                raise ArgumentMismatchError(
                    f"runs differ in '{key}': {first} has {reference.get(key)!r}, {name} has {a.get(key)!r} "
                    f"({files[first]} vs {files[name]}); a fair comparison needs identical arguments"
                )
    return reference
