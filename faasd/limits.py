"""What one container of a function may use (memory, CPU, processes, time, /tmp), and how
many of them are kept warm and how many connections each may serve.

Set per function at deploy time (``faas new --memory 128m ...``), stored with the version,
applied to every container of that version. Values are checked here, once, with the bounds
a user can act on; a value left out takes the daemon's default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from faasd.errors import InvalidRequest

MIB = 1024 * 1024
SIZE_PATTERN = re.compile(r"(\d+)([kmgt]?)i?b?", re.IGNORECASE)
SIZE_UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container, and the function's warm pool cap and reuse count."""

    memory_bytes: int = 256 * MIB
    cpus: float = 1.0
    pids: int = 128
    timeout_seconds: float = 30.0
    tmp_bytes: int = 64 * MIB
    warm: int = 4  # containers started ahead of demand, at most (0: every connection starts one)
    reuse: int = 1  # connections one container serves one after another (1: a fresh one each)
    sandbox: str = "runc"  # "runc": a container per connection; "fork": a child of a template per connection

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Limits:
        """Limits stored with a version; fields it predates take today's class defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def with_overrides(self, settings: Mapping[str, str]) -> Limits:
        """These limits with the user's ``settings`` (API query parameters) parsed and applied."""
        changes: dict[str, Any] = {}
        for name, parse in PARAMETERS.items():
            if name in settings:
                field, value = parse(name, settings[name])
                changes[field] = value
        limits = dataclasses.replace(self, **changes)
        if limits.sandbox == "fork" and limits.reuse > 1:
            raise InvalidRequest("reuse applies to runc containers: in fork mode every connection gets a fresh sandbox")
        return limits


def parse_size(text: str) -> int:
    """Bytes from ``64m``, ``1g``, ``512k``, ``1048576`` (binary units up to ``t``; ``MiB``/``mb`` also read)."""
    match = SIZE_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size: use a number with an optional k, m, g or t suffix, like 128m")
    return int(match[1]) * SIZE_UNITS[match[2].lower()]


def _bounded(name: str, value: float, low: float, high: float, shown: str) -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {shown}")


def _memory(name: str, text: str) -> tuple[str, int]:
    value = _size(name, text)
    _bounded(name, value, 8 * MIB, 1 << 50, "8m and 1024t")
    return "memory_bytes", value


def _tmp_size(name: str, text: str) -> tuple[str, int]:
    value = _size(name, text)
    _bounded(name, value, 0, 1 << 40, "0 and 1024g")
    return "tmp_bytes", value


def _cpus(name: str, text: str) -> tuple[str, float]:
    value = _number(name, text, float)
    cpus = os.cpu_count() or 1
    _bounded(name, value, 0.01, cpus, f"0.01 and {cpus} (the machine's CPUs)")
    return "cpus", value


def _timeout(name: str, text: str) -> tuple[str, float]:
    value = _number(name, text, float)
    _bounded(name, value, 0.1, 86400, "0.1 and 86400 seconds")
    return "timeout_seconds", value


def _count(field: str, low: int, high: int) -> Callable[[str, str], tuple[str, int]]:
    """The parser of a whole number from ``low`` to ``high`` for ``field``."""

    def parse(name: str, text: str) -> tuple[str, int]:
        value = _number(name, text, int)
        _bounded(name, value, low, high, f"{low} and {high}")
        return field, int(value)

    return parse


SANDBOXES = ("runc", "fork")


def _sandbox(name: str, text: str) -> tuple[str, str]:
    if text not in SANDBOXES:
        raise InvalidRequest(f"{name} must be one of {', '.join(SANDBOXES)}, not {text[:20]!r}")
    return "sandbox", text


def _size(name: str, text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}") from None


def _number(name: str, text: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number, not {text!r}") from None
    if value != value:  # NaN passes no bound check
        raise InvalidRequest(f"{name} must be a number, not {text!r}")
    return value


# The API's query parameters (and ``faas new`` options) that set a limit.
PARAMETERS = {
    "memory": _memory,
    "cpus": _cpus,
    "pids": _count("pids", 1, 65536),
    "timeout": _timeout,
    "tmp_size": _tmp_size,
    "warm": _count("warm", 0, 256),
    "reuse": _count("reuse", 1, 100_000),
    "sandbox": _sandbox,
}
