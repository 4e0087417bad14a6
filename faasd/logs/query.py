"""The ``tail``, ``since`` and ``follow`` parameters of a logs request, checked and parsed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from faasd.errors import InvalidRequest

DURATION = re.compile(r"(\d+)([SMHD])")
UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600, "D": 86400}
TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"", "0", "false", "no"}


@dataclass(frozen=True)
class LogQuery:
    """What a client asked of a function's log."""

    tail: int | None = None  # only the last N lines
    since: datetime | None = None  # only lines from this time on
    follow: bool = False  # then keep streaming new lines


def parse_query(params: Mapping[str, str], now: datetime) -> LogQuery:
    """The ``tail``, ``since`` and ``follow`` parameters of a logs request."""
    return LogQuery(
        tail=parse_tail(params["tail"]) if "tail" in params else None,
        since=parse_since(params["since"], now) if "since" in params else None,
        follow=parse_follow(params.get("follow", "")),
    )


def parse_since(value: str, now: datetime) -> datetime:
    """An RFC 3339 time (``2024-05-01T12:00:00Z``) or a duration back from ``now`` (``1h30m``)."""
    text = value.strip().upper()  # RFC 3339 allows a lower-case t and z
    try:
        if re.fullmatch(r"(\d+[SMHD])+", text):
            return now - timedelta(seconds=sum(int(n) * UNIT_SECONDS[unit] for n, unit in DURATION.findall(text)))
        moment = datetime.fromisoformat(text) if "T" in text or " " in text else None
    except (ValueError, OverflowError):
        moment = None
    if moment is None:
        raise InvalidRequest(
            f"since={value!r} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (45s, 10m, 1h30m, 2d)"
        )
    if moment.tzinfo is None:
        raise InvalidRequest(f"since={value!r} has no time zone: end it with Z (UTC) or an offset such as +02:00")
    return moment


def parse_tail(value: str) -> int:
    """A number of lines, zero or more."""
    if not value.isdigit():
        raise InvalidRequest(f"tail={value!r} is not a number of lines: give a whole number, 0 or more")
    return int(value)


def parse_follow(value: str) -> bool:
    """A yes or no; absent (empty) means no."""
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidRequest(f"follow={value!r} is not a yes or no: give 1 or 0")
