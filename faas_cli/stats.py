"""``faas stats``: the daemon's Prometheus metrics, summed up for a person at a terminal."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class FunctionStats:
    requests: dict[str, float] = field(default_factory=dict)  # by the status the client saw
    duration_sum: float = 0.0
    duration_count: float = 0.0
    start_buckets: list[tuple[float, float]] = field(default_factory=list)  # (upper bound, cumulative count)

    @property
    def mean_ms(self) -> float | None:
        return 1000 * self.duration_sum / self.duration_count if self.duration_count else None

    def start_quantile_ms(self, q: float) -> float | None:
        """Container start latency at quantile ``q``, interpolated in its bucket as Prometheus does."""
        return quantile(self.start_buckets, q)


@dataclass
class Stats:
    functions: dict[str, FunctionStats] = field(default_factory=lambda: defaultdict(FunctionStats))
    gauges: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    imports: float = 0.0
    import_bytes: float = 0.0
    import_seconds: float = 0.0


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """``histogram_quantile`` on cumulative ``(le, count)`` buckets, in milliseconds."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return 1000 * lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return 1000 * (lower + (upper - lower) * share)
        lower, below = upper, count
    return None


def parse(text: str) -> Stats:
    stats = Stats()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            match sample.name:
                case "faasd_requests_total":
                    stats.functions[labels["function"]].requests[labels["status"]] = value
                case "faasd_request_duration_seconds_sum":
                    stats.functions[labels["function"]].duration_sum = value
                case "faasd_request_duration_seconds_count":
                    stats.functions[labels["function"]].duration_count = value
                case "faasd_container_start_seconds_bucket":
                    stats.functions[labels["function"]].start_buckets.append((float(labels["le"]), value))
                case "faasd_errors_total":
                    stats.errors[labels["kind"]] = value
                case "faasd_containers_running" | "faasd_warm_containers" | "faasd_queue_depth" | "faasd_functions":
                    stats.gauges[sample.name] = value
                case "faasd_import_seconds_count":
                    stats.imports = value
                case "faasd_import_seconds_sum":
                    stats.import_seconds = value
                case "faasd_import_bytes_total":
                    stats.import_bytes = value
    return stats


GAUGES = ("functions", "containers_running", "warm_containers", "queue_depth")


def render(stats: Stats) -> list[str]:
    """The lines ``faas stats`` prints."""
    functions, running, warm, queued = (stats.gauges.get(f"faasd_{name}", 0) for name in GAUGES)
    # Warm containers run too, but serve no one yet: said apart, so an idle host does not look busy.
    serving = f"containers running {running:.0f} ({warm:.0f} warm, waiting for a connection)"
    lines = [f"functions {functions:.0f}   {serving}   queued {queued:.0f}", ""]
    rows: list[tuple[str, ...]] = [
        ("FUNCTION", "REQUESTS", "HANDLER", "502", "503", "504", "MEAN ms", "START p50 ms", "START p99 ms")
    ]
    for name, f in sorted(stats.functions.items()):
        rows.append(
            (
                name,
                f"{sum(f.requests.values()):.0f}",
                *(f"{f.requests.get(status, 0):.0f}" for status in ("handler", "502", "503", "504")),
                _ms(f.mean_ms),
                _ms(f.start_quantile_ms(0.5)),
                _ms(f.start_quantile_ms(0.99)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if stats.imports:
        mean = stats.import_seconds / stats.imports
        lines += ["", f"imports {stats.imports:.0f}   {stats.import_bytes / 1e6:.1f} MB   mean {mean:.2f} s"]
    if stats.errors:
        lines += ["", "errors " + "   ".join(f"{kind} {count:.0f}" for kind, count in sorted(stats.errors.items()))]
    return lines


def to_json(stats: Stats) -> dict[str, Any]:
    """What ``faas stats --json`` prints: counts as integers, times in ms to the microsecond; null where none.

    Prometheus text carries every value as a float; a count is a whole number all the same.
    """
    functions, running, warm, queued = (round(stats.gauges.get(f"faasd_{name}", 0)) for name in GAUGES)
    return {
        "functions_deployed": functions,
        "containers_running": running,
        "warm_containers": warm,
        "queue_depth": queued,
        "functions": {
            name: {
                "requests": _counts(f.requests),
                "mean_ms": _rounded(f.mean_ms),
                "start_p50_ms": _rounded(f.start_quantile_ms(0.5)),
                "start_p99_ms": _rounded(f.start_quantile_ms(0.99)),
            }
            for name, f in sorted(stats.functions.items())
        },
        "imports": {
            "count": round(stats.imports),
            "bytes": round(stats.import_bytes),
            "seconds": round(stats.import_seconds, 6),
        },
        "errors": _counts(stats.errors),
    }


def _counts(values: dict[str, float]) -> dict[str, int]:
    return {key: round(value) for key, value in values.items()}


def _rounded(ms: float | None) -> float | None:
    """Milliseconds to the microsecond: ``75.00000000000001`` is ``75.0``."""
    return None if ms is None else round(ms, 3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
