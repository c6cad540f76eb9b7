"""The project's one time format: UTC, milliseconds, a "Z" (2026-11-27T03:26:41.263Z). Every
record that crosses a module (the prediction-log line, the outcome, the registry) writes times
with `format_time` and reads them with `parse_time`, and compares the datetimes, never strings."""

from __future__ import annotations

import datetime as dt


def format_time(when: float | dt.datetime) -> str:
    """A POSIX timestamp or an aware datetime in the one format (a naive datetime is refused)."""
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError(f"time without a zone: {when.isoformat()}")
        when = when.astimezone(dt.UTC)
    else:
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time with a zone ("Z" or an offset) as an aware UTC datetime; ValueError if it
    is not one, or has no zone (a time without a zone means nothing across pods)."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return when.astimezone(dt.UTC)


def utc_now() -> str:
    return format_time(dt.datetime.now(dt.UTC))
