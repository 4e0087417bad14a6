"""What ``faas versions`` and ``faas describe`` print, from the JSON the daemon answers with."""

from faas_cli.versions import format_size, render_describe, render_versions

LIMITS = {"memory_bytes": 256 << 20, "cpus": 0.5, "pids": 128, "timeout_seconds": 30.0, "tmp_bytes": 64 << 20}


def version(number: int, current: bool = False, ip: str | None = None) -> dict:
    sandbox = "fork" if number == 2 else "runc"
    return {
        "version": number,
        "current": current,
        "image": f"hello:{number}",
        "digest": f"sha256:{number}bcdef0123456789",
        "entrypoint": ["/bin/hello"],
        "cmd": [],
        "limits": LIMITS | {"sandbox": sandbox},
        "created": 1714564800.0 + number,
        "ip": ip,
    }


def test_sizes_read_as_faas_new_takes_them() -> None:
    assert [format_size(n) for n in (256 << 20, 1 << 30, 1536 << 20, 4096, 1000, 0)] == [
        "256m",
        "1g",
        "1536m",
        "4k",
        "1000",
        "0",
    ]


def test_versions_table_stars_the_current_one_and_shows_own_addresses() -> None:
    lines = render_versions([version(1, ip="127.10.0.3"), version(2, current=True)])
    assert lines[0].split() == [
        "VERSION",
        "CURRENT",
        "IMAGE",
        "DIGEST",
        "CREATED",
        "MEMORY",
        "CPUS",
        "PIDS",
        "TIMEOUT",
        "SANDBOX",
        "IP",
    ]
    assert lines[1].split() == [
        "1",
        "hello:1",
        "1bcdef012345",
        "2024-05-01",
        "12:00:01Z",
        "256m",
        "0.5",
        "128",
        "30s",
        "runc",
        "127.10.0.3",
    ]
    assert lines[2].split() == [
        "2",
        "*",
        "hello:2",
        "2bcdef012345",
        "2024-05-01",
        "12:00:02Z",
        "256m",
        "0.5",
        "128",
        "30s",
        "fork",
        "-",
    ]
    assert lines[2].index("*") == lines[0].index("CURRENT"), "columns line up"


def test_describe_reads_top_down() -> None:
    function = version(2) | {
        "name": "hello",
        "ip": "127.10.0.2",
        "created": 1714564800.0,
        "updated": 1714564802.0,
        "versions": [version(1), version(2, current=True)],
        "current": 2,
        "requests": {"handler": 7, "502": 1},
    }
    lines = render_describe(function)
    assert lines[:10] == [
        "Name:      hello",
        "IP:        127.10.0.2",
        "Version:   2 (kept: 1, 2)",
        "Image:     hello:2",
        "Digest:    sha256:2bcdef0123456789",
        "Command:   /bin/hello",
        "Limits:    memory 256m  cpus 0.5  pids 128  timeout 30s  tmp 64m  sandbox fork",
        "Created:   2024-05-01 12:00:00Z",
        "Updated:   2024-05-01 12:00:02Z",
        "Requests:  8 (502 1, handler 7)",
    ]
    assert lines[10:12] == ["", "Versions:"] and len(lines) == 15
