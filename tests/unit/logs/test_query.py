"""The tail, since and follow parameters: what is accepted, and what a refusal says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from faasd.errors import InvalidRequest
from faasd.logs.query import LogQuery, parse_follow, parse_query, parse_since, parse_tail

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45s", NOW - timedelta(seconds=45)),
        ("10m", NOW - timedelta(minutes=10)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("2d", NOW - timedelta(days=2)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01t10:00:00.25z", datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01 10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_since_takes_rfc3339_times_and_durations(value: str, expected: datetime) -> None:
    assert parse_since(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("", "neither an RFC 3339 time"),
        ("10", "neither an RFC 3339 time"),
        ("1y", "neither an RFC 3339 time"),
        ("-5m", "neither an RFC 3339 time"),
        ("yesterday", "neither an RFC 3339 time"),
        ("2024-05-01", "neither an RFC 3339 time"),
        ("2024-13-01T00:00:00Z", "neither an RFC 3339 time"),
        ("99999999999999d", "neither an RFC 3339 time"),
        ("2024-05-01T10:00:00", "has no time zone"),
    ],
)
def test_bad_since_says_what_is_accepted(value: str, hint: str) -> None:
    with pytest.raises(InvalidRequest, match=hint) as caught:
        parse_since(value, NOW)
    assert caught.value.status == 400 and f"since={value!r}" in caught.value.message


def test_tail_and_follow_values() -> None:
    assert parse_tail("0") == 0 and parse_tail("250") == 250
    for bad in ("", "-1", "1.5", "ten", " 3"):
        with pytest.raises(InvalidRequest, match="not a number of lines"):
            parse_tail(bad)
    assert [parse_follow(v) for v in ("1", "true", "YES", "0", "false", "")] == [True, True, True, False, False, False]
    with pytest.raises(InvalidRequest, match="follow='maybe'"):
        parse_follow("maybe")


def test_query_defaults_and_all_parameters() -> None:
    assert parse_query({}, NOW) == LogQuery()
    assert parse_query({"tail": "5", "since": "1m", "follow": "1"}, NOW) == LogQuery(
        tail=5, since=NOW - timedelta(minutes=1), follow=True
    )
