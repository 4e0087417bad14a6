"""How many warm containers a pool keeps for an arrival rate (the rest is in tests/integration/test_pool.py)."""

from faasd.pool import warm_target


def test_nothing_is_kept_warm_without_arrivals_or_with_warm_0() -> None:
    assert warm_target(0.0, 0.05, 4) == 0
    assert warm_target(100.0, 0.05, 0) == 0


def test_enough_are_started_to_keep_up_with_the_rate_plus_one_ready() -> None:
    assert warm_target(1.0, 0.05, 4) == 2  # one start at a time covers it; one more waits ready
    assert warm_target(40.0, 0.05, 8) == 3  # Little's law: 40/s x 0.05 s = 2 starting
    assert warm_target(1000.0, 0.05, 8) == 8, "never over the cap"


def test_under_reuse_only_the_arrivals_returning_containers_cannot_take_ask_for_starts() -> None:
    assert warm_target(1000.0, 0.05, 16) == 16
    assert warm_target(1000.0, 0.05, 16, reuse=1000) == 2  # containers come back: one start covers it
    assert warm_target(100.0, 0.05, 16, reuse=3) == 3  # a start per 3 arrivals: 33/s x 0.05 s, plus one
