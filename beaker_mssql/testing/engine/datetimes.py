"""DATEADD / DATEDIFF / DATEPART arithmetic on datetime values (shared by expressions and functions)."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from typing import Any

from ..results import SQLError
from .types import BIGINT_MAX, BIGINT_MIN, INT_MAX, INT_MIN, round_datetime


def datetime_add(part: str, n: Any, d: Any, kind: str) -> Any:
    if n is None or d is None:
        return None
    if isinstance(n, float):
        n = int(n)
    try:
        if part in ("year", "quarter", "month"):
            months = n * (12 if part == "year" else 3 if part == "quarter" else 1)
            y, m0 = divmod(d.month - 1 + months, 12)
            year = d.year + y
            month = m0 + 1
            day = min(d.day, calendar.monthrange(year, month)[1])
            r = d.replace(year=year, month=month, day=day)
        else:
            unit = {
                "dayofyear": 86400,
                "day": 86400,
                "weekday": 86400,
                "week": 7 * 86400,
                "hour": 3600,
                "minute": 60,
                "second": 1,
            }.get(part)
            if unit is not None:
                r = d + timedelta(seconds=n * unit)
            elif part == "millisecond":
                r = d + timedelta(milliseconds=n)
            elif part == "microsecond":
                r = d + timedelta(microseconds=n)
            else:
                r = d + timedelta(microseconds=n // 1000)
        if kind == "datetime":
            return round_datetime(r)
        return r
    except (OverflowError, ValueError):
        raise SQLError(517, f"Adding a value to a '{kind}' column caused an overflow.", 16) from None


def datetime_diff(part: str, a: Any, b: Any, big: bool) -> Any:
    if a is None or b is None:
        return None
    if part == "year":
        r = b.year - a.year
    elif part == "quarter":
        r = (b.year - a.year) * 4 + (b.month - 1) // 3 - (a.month - 1) // 3
    elif part == "month":
        r = (b.year - a.year) * 12 + b.month - a.month
    elif part in ("day", "dayofyear"):
        r = (b.date() - a.date()).days
    elif part == "week":
        # weeks start on Sunday (us_english DATEFIRST 7)
        sa = a.date() - timedelta(days=(a.weekday() + 1) % 7)
        sb = b.date() - timedelta(days=(b.weekday() + 1) % 7)
        r = (sb - sa).days // 7
    elif part == "weekday":
        r = (b.date() - a.date()).days
    else:

        def trunc(d: datetime, unit_us: int) -> int:
            epoch = datetime(1, 1, 1)
            delta = d - epoch
            total = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
            return total // unit_us

        unit = {
            "hour": 3_600_000_000,
            "minute": 60_000_000,
            "second": 1_000_000,
            "millisecond": 1000,
            "microsecond": 1,
            "nanosecond": 1,
        }[part]
        r = trunc(b, unit) - trunc(a, unit)
        if part == "nanosecond":
            r *= 1000
    lo, hi = (BIGINT_MIN, BIGINT_MAX) if big else (INT_MIN, INT_MAX)
    if not lo <= r <= hi:
        raise SQLError(
            535,
            "The datediff function resulted in an overflow. The number of dateparts separating two "
            "date/time instances is too large. Try to use datediff with a less precise datepart.",
            16,
        )
    return r


def date_part(part: str, d: Any) -> Any:
    if d is None:
        return None
    if part == "year":
        return d.year
    if part == "quarter":
        return (d.month - 1) // 3 + 1
    if part == "month":
        return d.month
    if part == "dayofyear":
        return d.timetuple().tm_yday
    if part == "day":
        return d.day
    if part == "week":
        jan1 = datetime(d.year, 1, 1)
        return ((d - jan1).days + (jan1.weekday() + 1) % 7) // 7 + 1
    if part == "weekday":
        return (d.weekday() + 1) % 7 + 1
    if part == "hour":
        return d.hour
    if part == "minute":
        return d.minute
    if part == "second":
        return d.second
    if part == "millisecond":
        return d.microsecond // 1000
    if part == "microsecond":
        return d.microsecond
    return d.microsecond * 1000
