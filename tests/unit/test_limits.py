import pytest

from faasd.errors import InvalidRequest
from faasd.limits import MIB, Limits, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", MIB), ("512k", 512 * 1024), ("64m", 64 * MIB), ("64M", 64 * MIB), ("1g", 1024 * MIB), ("2t", 2 << 40)]
    + [("128MiB", 128 * MIB), ("128mb", 128 * MIB), (" 2m ", 2 * MIB), ("0", 0)],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "m", "-1m", "1.5g", "1p", "12 m", "0x10"])
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_overrides_apply_only_what_is_given() -> None:
    limits = Limits().with_overrides({"memory": "64m", "cpus": "0.5", "tag": "ignored:1"})
    assert limits == Limits(memory_bytes=64 * MIB, cpus=0.5)
    assert Limits().with_overrides({"pids": "8", "timeout": "2.5", "tmp_size": "0"}) == Limits(
        pids=8, timeout_seconds=2.5, tmp_bytes=0
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"memory": "1m"}, "memory must be between 8m"),
        ({"memory": "lots"}, "memory: 'lots' is not a size"),
        ({"cpus": "0"}, "cpus must be between 0.01"),
        ({"cpus": "1000"}, "the machine's CPUs"),
        ({"cpus": "nan"}, "cpus must be a number"),
        ({"pids": "0"}, "pids must be between 1"),
        ({"pids": "2.5"}, "pids must be a number"),
        ({"timeout": "0"}, "timeout must be between 0.1"),
        ({"timeout": "inf"}, "timeout must be between"),
        ({"tmp_size": "2000g"}, "tmp_size must be between 0 and 1024g"),
    ],
)
def test_bad_values_name_the_limit_and_the_bound(settings: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Limits().with_overrides(settings)


def test_stored_limits_round_trip_and_tolerate_older_or_newer_fields() -> None:
    limits = Limits(memory_bytes=32 * MIB, pids=9)
    assert Limits.from_json(limits.to_json()) == limits
    assert Limits.from_json('{"pids": 3, "from_the_future": 1}') == Limits(pids=3)
    assert Limits.from_json("{}") == Limits()
