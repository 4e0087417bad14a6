"""The deploy-time check (``faas new --check``): one container of the new version started as a
connection's would be, before the version is registered; refused, with its last log lines,
when its handler exits or never connects to ``/control.sock``.

Without it a broken handler deploys silently and its first client meets the 502. The check
stops at a handler waiting on ``/control.sock``: it sends no request, so an app that starts
but answers wrongly still passes.
"""

from __future__ import annotations

import asyncio
import time

from faasd.dispatch import Dispatcher
from faasd.errors import CheckFailed
from faasd.instance import Outcome
from faasd.logs import FunctionLog, LogQuery, read_log
from faasd.printable import printable
from faasd.registry import Version

# The container's lines quoted in the refusal, at most; and how long the log thread may take
# to write them once the container is gone.
QUOTED_LINES = 5
QUOTED_CHARS = 300
WRITTEN_SECONDS = 2.0
WHY = {
    Outcome.START_FAILED: "its container exited before its handler connected to /control.sock",
    Outcome.START_TIMEOUT: "its handler did not connect to /control.sock within --start-timeout",
}


async def check_handler(dispatcher: Dispatcher, version: Version, function_log: FunctionLog) -> None:
    """Start one container of ``version`` and stop it once its handler waits for a connection;
    ``CheckFailed`` when it never does."""
    instance = dispatcher.instance(version, dispatcher.template(version), function_log)
    try:
        failure = await instance.start()
    finally:
        await instance.stop()
    outcome = "checked" if failure is None else f"check_{failure.value}"
    instance.record(version=version.number, outcome=outcome, exit=instance.exit_code)
    if failure is None:
        return
    status = f" (exit status {instance.exit_code})" if instance.exit_code is not None else ""
    said = await last_lines(function_log, instance.id)
    quoted = " | ".join(f"[{stream}] {printable(text, QUOTED_CHARS)}" for stream, text in said)
    raise CheckFailed(
        f"the check of {version.function} version {version.number} failed: {WHY[failure]}{status}; "
        f"nothing deployed. Its last lines: {quoted or '(none)'}"
    )


async def last_lines(function_log: FunctionLog, request_id: str) -> list[tuple[str, str]]:
    """``(stream, text)`` of the container's last lines before the daemon's own record, read
    back once that record is on disk (the log thread writes in its own time)."""
    deadline = time.monotonic() + WRITTEN_SECONDS
    while True:
        mine = []
        async for chunk in read_log(function_log, LogQuery(tail=200)):
            for line in chunk.decode(errors="replace").splitlines():
                _time, line_id, stream, text = (line.split(" ", 3) + ["", "", ""])[:4]
                if line_id == request_id:
                    mine.append((stream, text))
        if (mine and mine[-1][0] == "faasd") or time.monotonic() > deadline:
            return [line for line in mine if line[0] != "faasd"][-QUOTED_LINES:]
        await asyncio.sleep(0.05)
