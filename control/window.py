"""Fill windows and refresh times in an ISP's local time. Pure: time is passed in.

Open Connect fills its appliances off-peak, in a daily window in the ISP's local time
(2 AM to 2 PM by default there). A window is "HH:MM-HH:MM" in an IANA time zone; it may
cross midnight ("22:00-06:00"). A refresh schedule is one local time of day ("03:00").

Rules of this module:

1. A window is half-open, [start, end) in local wall-clock time; start == end is refused
   (say "00:00-24:00" for always).
2. Local time comes from `zoneinfo`, so daylight-saving shifts are honoured: a window
   opens at its wall-clock time on the day of the change too (a start inside a DST gap
   opens at the first instant after it).
3. Every function takes `now` (Unix seconds, UTC) and returns Unix seconds; no clock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["FillWindow", "parse_window", "parse_time_of_day", "check_tz", "is_open", "next_open",
           "next_daily", "format_time_of_day", "DAY_MINUTES"]

DAY_MINUTES = 24 * 60
_HHMM = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])\Z")


@dataclass(frozen=True, slots=True)
class FillWindow:
    start_min: int  # minutes after local midnight, [0, 1440)
    end_min: int  # (0, 1440]
    tz: str = "UTC"

    @property
    def range_text(self) -> str:
        return f"{_fmt(self.start_min)}-{_fmt(self.end_min)}"

    def __str__(self) -> str:
        return f"{self.range_text} {self.tz}"


def format_time_of_day(minutes: int) -> str:
    return _fmt(minutes)


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_time_of_day(text: str, *, allow_24: bool = False) -> int:
    """'HH:MM' -> minutes after midnight; ValueError saying what is wrong."""
    m = _HHMM.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > DAY_MINUTES or (minutes == DAY_MINUTES and not allow_24):
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00 to 23:59)")
    return minutes


def check_tz(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError("time zone must be an IANA name such as \"Europe/Paris\"")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name[:64]!r}") from None
    return name


def parse_window(text: str, tz: str = "UTC") -> FillWindow:
    """'HH:MM-HH:MM' (end may be 24:00) -> FillWindow; ValueError saying what is wrong."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{str(text)[:40]!r} is not a time range HH:MM-HH:MM")
    a, b = text.split("-")
    start, end = parse_time_of_day(a), parse_time_of_day(b, allow_24=True)
    # start == end (03:00-03:00) is the whole day, as 00:00-24:00 is: is_open() says so
    return FillWindow(start, end, check_tz(tz))


def _local_minutes(now: float, tz: str) -> tuple[datetime, int]:
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    return local, local.hour * 60 + local.minute


def is_open(w: FillWindow, now: float) -> bool:
    _, m = _local_minutes(now, w.tz)
    if w.start_min < w.end_min:
        return w.start_min <= m < w.end_min
    return m >= w.start_min or m < w.end_min  # crosses midnight


def _at_local(day: datetime, minutes: int, tz: ZoneInfo) -> float:
    """Unix time of `minutes` after local midnight of `day`'s date (rule 2 for DST gaps)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    aware = naive.replace(tzinfo=tz)
    back = aware.astimezone(timezone.utc).astimezone(tz)
    if back.replace(tzinfo=None) != naive:  # a wall-clock time the DST change skipped
        return aware.astimezone(timezone.utc).replace(fold=0).timestamp()
    return aware.timestamp()


def next_daily(minutes: int, tz: str, now: float) -> float:
    """The first instant >= now at local time-of-day `minutes` in `tz`."""
    zone = ZoneInfo(tz)
    local = datetime.fromtimestamp(now, zone)
    for days in range(0, 3):
        t = _at_local(local + timedelta(days=days), minutes, zone)
        if t >= now:
            return t
    raise AssertionError("unreachable: a time of day recurs within two days")  # pragma: no cover


def next_open(w: FillWindow, now: float) -> float:
    """`now` if the window is open, else when it next opens."""
    return now if is_open(w, now) else next_daily(w.start_min, w.tz, now)
