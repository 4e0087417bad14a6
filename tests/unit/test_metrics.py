"""A removed function's series go with it; every other function's stay."""

from __future__ import annotations

from prometheus_client import REGISTRY

from faasd import metrics


def series(function: str) -> list[str]:
    """The names of the samples labelled with ``function``."""
    return sorted(
        sample.name
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("function") == function
    )


def test_forget_drops_every_series_of_one_function_only() -> None:
    for function in ("metrics-gone", "metrics-kept"):
        metrics.REQUESTS.labels(function, "handler").inc()
        metrics.REQUESTS.labels(function, "502").inc()
        metrics.REQUEST_DURATION.labels(function).observe(0.1)
        metrics.CONTAINER_START.labels(function).observe(0.01)
        metrics.CONTAINER_PATH.labels(function, "cold").inc()
    kept = series("metrics-kept")
    metrics.forget("metrics-gone")
    assert series("metrics-gone") == []
    assert metrics.requests_by_status("metrics-gone") == {}
    assert series("metrics-kept") == kept and metrics.requests_by_status("metrics-kept") == {"handler": 1, "502": 1}
    metrics.forget("metrics-kept")
