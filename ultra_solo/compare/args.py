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
            if not same_value(reference.get(key), a.get(key)):
                raise ArgumentMismatchError(
                    f"runs differ in '{key}': {first} has {reference.get(key)!r}, {name} has {a.get(key)!r} "
                    f"({files[first]} vs {files[name]}); a fair comparison needs identical arguments"
                )
    return reference


def same_value(a, b) -> bool:
    """Whether two runs' values of a key agree: equal, or two spellings (relative, absolute) of one existing file, as
    when a comparison is resumed from another directory."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    pa, pb = Path(a), Path(b)
    return pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve()


def absolute_file(value):
    """`value` as an absolute path if it names an existing file (a dataset YAML, a checkpoint), else unchanged: runs
    then record where their data came from, whatever directory the comparison is resumed from."""
    return str(Path(value).resolve()) if isinstance(value, str) and Path(value).is_file() else value
