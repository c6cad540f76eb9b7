"""Argument types shared by the command-line programs: a bad value is an argparse error (exit
code 2, with a message naming the option and the value)."""

from __future__ import annotations

import argparse


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
