"""Thousands of connections leave the daemon as they found it: fds, memory, bundles, containers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.integration.conftest import Daemon, daemon_range, eventually, http_get
from tests.integration.faulty import bundles, containers, open_fds, rss_kib

CONNECTIONS = 2000
# A few clients at a time keep the run near a minute on two cores; each still opens its own connection.
CLIENTS = 4
WARM_UP = 100
RSS_SLACK_KIB = 4096


def serve(ip: str, count: int) -> list[tuple[int, bytes]]:
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(lambda _: http_get(ip), range(count)))


def quiet(daemon: Daemon) -> bool:
    return not bundles(daemon) and not containers(daemon)


def test_two_thousand_connections_leak_nothing(make_daemon, busybox_image) -> None:
    daemon = make_daemon(daemon_range(21))
    ip = daemon.deploy("steady", busybox_image("steady"))
    pid = daemon.proc.pid
    # The first connections grow caches and pools that then stay; measure after them.
    assert serve(ip, WARM_UP) == [(200, b"steady\n")] * WARM_UP
    assert eventually(lambda: quiet(daemon))
    fds, rss = open_fds(pid), rss_kib(pid)

    answers = serve(ip, CONNECTIONS)
    assert answers == [(200, b"steady\n")] * CONNECTIONS
    assert eventually(lambda: quiet(daemon))
    fds_after, rss_after = open_fds(pid), rss_kib(pid)
    print(f"\nafter {CONNECTIONS} connections: fds {fds} -> {fds_after}, RSS {rss} -> {rss_after} KiB")
    assert fds_after == fds
    assert rss_after - rss < RSS_SLACK_KIB
