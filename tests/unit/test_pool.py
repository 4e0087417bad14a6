"""How many warm containers a pool keeps for an arrival rate (the rest is in tests/integration/test_pool.py)."""

from faasd.pool import RATE_WINDOW_SECONDS, arrival_rate, warm_target


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


def test_the_rate_is_counted_over_the_window_once_arrivals_fill_it() -> None:
    now = 1000.0
    steady = [now - RATE_WINDOW_SECONDS + 0.05 * i for i in range(100)]  # 20/s for the whole window
    assert arrival_rate(steady, now) == 20.0
    assert arrival_rate([], now) == 0.0


def test_a_burst_after_a_quiet_spell_counts_at_its_own_rate_from_its_first_second() -> None:
    now = 1000.0
    burst = [now - 2.0 + 0.05 * i for i in range(40)]  # 20/s for the last two seconds, nothing before
    assert arrival_rate(burst, now) == 20.0  # over the whole window it would read 8/s
    assert warm_target(arrival_rate(burst, now), 0.1, 4) == 3  # 2 starting to keep up, one ready


def test_a_few_arrivals_close_together_are_not_yet_a_high_rate() -> None:
    now = 1000.0
    assert arrival_rate([now - 0.002, now - 0.001, now], now) == 3.0  # over a second at least
    assert warm_target(arrival_rate([now], now), 0.1, 4) == 2
