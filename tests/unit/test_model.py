"""The small definitions in model.py that several layers share."""

from __future__ import annotations

from opswatch.model import iso_time


def test_iso_time_is_utc_in_whole_seconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00+00:00"
    assert iso_time(1_700_000_000.999) == "2023-11-14T22:13:20+00:00"


def test_iso_time_of_nothing_is_nothing() -> None:
    assert iso_time(None) is None
