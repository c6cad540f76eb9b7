"""Argument types shared by the command-line programs: a bad value is an argparse error (exit
code 2, with a message naming the option and the value)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _number(text: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a {'whole number' if kind is int else 'number'}: {text!r}"
        ) from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


def open_unit(text: str) -> float:
    """A number strictly between 0 and 1 (a p-value, a ROC AUC floor)."""
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def fraction(text: str) -> float:
    """A share in (0, 1] (a canary's share of customers)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def share(text: str) -> float:
    """A share in [0, 1] (a tolerated fraction of bad lines)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def shard_spec(text: str) -> tuple[int, int]:
    """INDEX/COUNT with 0 <= INDEX < COUNT (a Kubernetes Indexed Job's completion index / completions)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"needs 0 <= INDEX < COUNT, got {text!r}")
    return index, count


def reasons_count(text: str) -> int:
    """How many reasons: 1 to the number of features, or "all"."""
    from churn.schema import FEATURE_NAMES

    if text == "all":
        return len(FEATURE_NAMES)
    value = _number(text, int)
    if not 1 <= value <= len(FEATURE_NAMES):
        raise argparse.ArgumentTypeError(f'must be 1 to {len(FEATURE_NAMES)}, or "all"; got {value}')
    return value


def value_or_exit(parser: argparse.ArgumentParser, convert: Callable[[str | None], T], text: str | None) -> T:
    """`convert(text)`, or exit code 2 with "error: <its ValueError>" on stderr. For options checked
    after parsing rather than by an argparse type: their message is the problem alone, without the
    usage lines (as these commands have always said it)."""
    try:
        return convert(text)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")


def options_from(kind: type[T], args: argparse.Namespace, **checked: Any) -> T:
    """A command's options (`kind`, a dataclass) from the parsed arguments of the same names, but
    `checked`: the fields given here (converted or checked after parsing)."""
    names = {f.name for f in dataclasses.fields(kind)} - checked.keys()
    return kind(**{name: getattr(args, name) for name in names}, **checked)
