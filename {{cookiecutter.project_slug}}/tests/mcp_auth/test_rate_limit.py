"""Rate limits: GCRA per key on a fake clock, bounded memory, MCP_RATE_LIMIT parsing."""

from __future__ import annotations

import pytest
from mcp_auth.rate_limit import (
    FAILED_AUTH_RATE,
    Rate,
    RateLimiter,
    RateLimits,
    parse_rate,
    retry_after_header,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: Rate, max_keys: int = 100_000) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rate, clock=clock, max_keys=max_keys), clock


def test_a_burst_of_limit_is_allowed_then_refused_with_the_wait_for_one_event() -> None:
    rl, _ = limiter(Rate(120, 60.0))
    assert [rl.hit("alice") for _ in range(120)] == [None] * 120
    assert rl.hit("alice") == pytest.approx(0.5)  # one event every 60/120 s


@pytest.mark.parametrize("rate", [Rate(100, 1.0), Rate(7, 1.0), Rate(3, 3600.0), Rate(1, 60.0)])
def test_the_burst_is_exactly_limit_despite_float_sums(rate: Rate) -> None:
    rl, _ = limiter(rate)
    assert sum(rl.hit("k") is None for _ in range(rate.limit + 5)) == rate.limit


def test_waiting_the_retry_after_lets_one_in_and_a_full_period_restores_the_burst() -> None:
    rl, clock = limiter(Rate(3, 60.0))
    for _ in range(3):
        rl.hit("k")
    assert rl.hit("k") == pytest.approx(20.0)
    clock.now += 19.99
    assert rl.hit("k") == pytest.approx(0.01)
    clock.now += 0.01
    assert rl.hit("k") is None
    assert rl.hit("k") == pytest.approx(20.0)
    clock.now += 60.0
    assert [rl.hit("k") for _ in range(4)][-2:] == [None, pytest.approx(20.0)]


def test_refused_events_are_not_counted_so_hammering_does_not_extend_the_wait() -> None:
    rl, clock = limiter(Rate(2, 10.0))
    rl.hit("k")
    rl.hit("k")
    for _ in range(100):
        assert rl.hit("k") == pytest.approx(5.0)
    clock.now += 5.0
    assert rl.hit("k") is None


def test_keys_are_independent() -> None:
    rl, _ = limiter(Rate(2, 60.0))
    assert rl.hit("a") is None and rl.hit("a") is None and rl.hit("a") is not None
    assert rl.hit("b") is None and rl.hit("b") is None
    assert rl.peek("c") is None


def test_after_a_burst_the_steady_rate_is_limit_per_period() -> None:
    rl, clock = limiter(Rate(10, 1.0))
    allowed = sum(rl.hit("k") is None for _ in range(50))
    # Then 20 s of a client asking every 10 ms: one in every ten gets through.
    for _ in range(2000):
        clock.now += 0.01
        allowed += rl.hit("k") is None
    assert allowed in (210, 211)  # 10 in the burst, 10 a second for 20 s; edge timing may add one


def test_peek_reports_without_consuming() -> None:
    rl, _ = limiter(Rate(2, 60.0))
    for _ in range(10):
        assert rl.peek("k") is None
    assert rl.hit("k") is None and rl.hit("k") is None
    assert rl.peek("k") == pytest.approx(30.0)
    assert rl.peek("k") == rl.hit("k")
    assert len(rl) == 1 and rl.peek("unknown") is None and len(rl) == 1


def test_recovered_keys_are_forgotten_without_reaching_the_cap() -> None:
    rl, clock = limiter(Rate(5, 1.0))
    for i in range(10_000):
        clock.now += 0.5
        rl.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(rl) <= 3  # only the keys seen in the last period


def test_memory_stays_within_the_cap_under_a_flood_of_distinct_keys() -> None:
    rl, _ = limiter(Rate(1, 3600.0), max_keys=100)
    rl.hit("victim")
    assert rl.hit("victim") is not None
    for i in range(50_000):  # all at the same instant: nothing has recovered
        rl.hit(f"k{i}")
        assert len(rl) <= 100
    assert len(rl) == 100
    # The documented price of the cap: the oldest key was forgotten and starts afresh.
    assert rl.hit("victim") is None


def test_the_cap_evicts_the_least_recently_seen_key() -> None:
    rl, clock = limiter(Rate(2, 60.0), max_keys=2)
    rl.hit("a")
    clock.now += 1
    rl.hit("b")
    clock.now += 1
    rl.hit("a")  # a is now the most recently seen
    rl.hit("c")
    assert rl.peek("a") is not None and rl.hit("b") is None and len(rl) == 2


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/minute", Rate(120, 60.0)),
        ("1/second", Rate(1, 1.0)),
        ("5/seconds", Rate(5, 1.0)),
        ("1000/hours", Rate(1000, 3600.0)),
        (" 30 / Minutes ", Rate(30, 60.0)),
        ("10/HOUR", Rate(10, 3600.0)),
    ],
)
def test_parse_rate_accepts(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text",
    ["", "120", "0/minute", "-1/minute", "1.5/second", "120/min", "120/m", "120/day", "120 per minute", "/minute"],
)
def test_parse_rate_refuses_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected <n>/second\|minute\|hour, e\.g\. 120/minute"):
        parse_rate(text)


@pytest.mark.parametrize(("limit", "period"), [(0, 60.0), (1, 0.0), (1, float("inf")), (1, float("nan"))])
def test_impossible_rates_are_refused(limit: int, period: float) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        Rate(limit, period)


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.0, "1"), (0.001, "1"), (0.5, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")]
)
def test_retry_after_header_is_whole_seconds_rounded_up_and_at_least_one(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_setting_turns_both_limits_off(text: str | None) -> None:
    assert RateLimits.from_setting(text) == RateLimits(None, None)


def test_a_setting_limits_identities_at_that_rate_and_failed_auth_at_the_fixed_one() -> None:
    limits = RateLimits.from_setting("120/minute")
    assert limits.per_identity is not None and limits.per_identity.rate == Rate(120, 60.0)
    assert limits.failed_auth_per_address is not None and limits.failed_auth_per_address.rate == FAILED_AUTH_RATE
    with pytest.raises(ValueError, match="expected"):
        RateLimits.from_setting("lots")
