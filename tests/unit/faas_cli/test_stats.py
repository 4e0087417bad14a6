import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from faas_cli.stats import parse, quantile, render, to_json


def exposition() -> str:
    """Metrics shaped like faasd's, from a registry of this test's own."""
    registry = CollectorRegistry()
    requests = Counter("faasd_requests", "", ["function", "status"], registry=registry)
    start = Histogram("faasd_container_start_seconds", "", ["function"], buckets=(0.1, 0.2, 0.4), registry=registry)
    duration = Histogram("faasd_request_duration_seconds", "", ["function"], registry=registry)
    Gauge("faasd_containers_running", "", registry=registry).set(3)
    Gauge("faasd_warm_containers", "", registry=registry).set(2)
    Counter("faasd_errors", "", ["kind"], registry=registry).labels("no_answer").inc(2)
    requests.labels("hello", "handler").inc(8)
    requests.labels("hello", "502").inc(2)
    for seconds in (0.05, 0.15, 0.15, 0.3):
        start.labels("hello").observe(seconds)
    duration.labels("hello").observe(0.1)
    duration.labels("hello").observe(0.3)
    return generate_latest(registry).decode()


def test_metrics_are_summed_up_per_function() -> None:
    stats = parse(exposition())
    hello = stats.functions["hello"]
    assert hello.requests == {"handler": 8, "502": 2}
    assert hello.mean_ms == pytest.approx(200)
    assert hello.start_quantile_ms(0.5) == pytest.approx(150)
    assert stats.gauges["faasd_containers_running"] == 3
    assert stats.errors == {"no_answer": 2}
    lines = render(stats)
    assert lines[0].startswith("functions 0   containers running 3 (2 warm, waiting for a connection)")
    assert lines[2].startswith("FUNCTION  REQUESTS  HANDLER  502  503  504  MEAN ms") and "START p99 ms" in lines[2]
    assert lines[3].split()[:6] == ["hello", "10", "8", "2", "0", "0"]
    assert lines[-1] == "errors no_answer 2"


def test_quantiles_interpolate_within_a_bucket_and_stop_at_the_last_bound() -> None:
    buckets = [(0.1, 1.0), (0.2, 3.0), (float("inf"), 4.0)]
    assert quantile(buckets, 0.25) == pytest.approx(100)
    assert quantile(buckets, 0.5) == pytest.approx(150)
    assert quantile(buckets, 0.99) == pytest.approx(200), "beyond the last finite bound: that bound"
    assert quantile([], 0.5) is None
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_json_has_the_numbers_of_the_table() -> None:
    summary = to_json(parse(exposition()))
    assert summary["containers_running"] == 3 and summary["queue_depth"] == 0
    assert summary["errors"] == {"no_answer": 2}
    hello = summary["functions"]["hello"]
    assert hello["requests"] == {"handler": 8, "502": 2}
    assert hello["mean_ms"] == pytest.approx(200) and hello["start_p50_ms"] == pytest.approx(150)
    assert summary["imports"] == {"count": 0, "bytes": 0, "seconds": 0}


def test_json_counts_are_integers_and_times_are_rounded() -> None:
    registry = CollectorRegistry()
    duration = Histogram("faasd_request_duration_seconds", "", ["function"], registry=registry)
    Counter("faasd_requests", "", ["function", "status"], registry=registry).labels("hello", "handler").inc()
    for seconds in (0.05, 0.1):  # a mean of 75 ms, which floats make 75.00000000000001
        duration.labels("hello").observe(seconds)
    summary = to_json(parse(generate_latest(registry).decode()))
    hello = summary["functions"]["hello"]
    assert hello["requests"] == {"handler": 1} and type(hello["requests"]["handler"]) is int
    assert repr(hello["mean_ms"]) == "75.0"
    for key in ("functions_deployed", "containers_running", "warm_containers", "queue_depth"):
        assert type(summary[key]) is int, key
    assert all(type(summary["imports"][key]) is int for key in ("count", "bytes"))
