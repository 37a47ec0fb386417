"""Rate limits (MCP_RATE_LIMIT): requests per caller identity, failed authentications per address.

Over a limit the server answers 429 with ``Retry-After``. State lives in memory, so every process
(replica) counts on its own: N replicas together allow up to N times the configured rate.

The algorithm is GCRA (generic cell rate algorithm): one timestamp per key, the "theoretical
arrival time" (TAT) at which the key's budget would be back to empty if no more events came. A
rate of ``limit`` per ``period`` allows a burst of ``limit`` events at once, then one event every
``period / limit`` seconds. Each hit is O(1) (amortized, for the eviction sweep).

Concurrency: the server calls this from its one event-loop thread and nothing here awaits, so a
check and its update cannot interleave and no lock is needed. Calling it from several threads
would need one.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
EXPECTED_FORM = "expected <n>/second|minute|hour, e.g. 120/minute"
_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*(second|minute|hour)s?\s*", re.IGNORECASE)

DEFAULT_MAX_KEYS = 100_000
"""Keys tracked per limiter at most: a few MB for short keys such as addresses or identities."""

_SLACK = 1e-6
"""Float sums of ``period / limit`` can land a hair past an exact boundary (at 100/second the
100th event of a burst would be refused by 7e-16 s): a microsecond of tolerance keeps the burst
exactly ``limit``."""


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or not (math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"invalid rate {self.limit}/{self.period}s: need at least 1 event per positive period")


def parse_rate(text: str) -> Rate:
    """``"120/minute"`` -> ``Rate(120, 60.0)``; units second, minute, hour (or their plurals)."""
    match = _RATE.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise ValueError(f"invalid rate {text!r}: {EXPECTED_FORM} (n at least 1)")
    return Rate(int(match[1]), PERIODS[match[2].lower()])


def retry_after_header(seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, rounded up so a client that waits is let in, and at
    least 1 because 0 would invite an immediate retry."""
    return str(max(1, math.ceil(seconds)))


class RateLimiter:
    """GCRA per key, in memory, with bounded memory.

    Keys are kept in order of their last recorded event. A key whose TAT has passed has fully
    recovered (forgetting it changes nothing), and every TAT is at most ``period`` after the event
    that set it, so each hit drops recovered keys from the old end: a key is remembered at most
    ``period`` longer than it matters. On top of that at most ``max_keys`` keys are kept; a new key
    beyond the cap evicts the least recently seen one. A flood of more than ``max_keys`` distinct
    keys within one period can therefore make the limiter forget a key that was over its limit,
    which then starts afresh: the price of bounded memory under an attacker with endless keys.
    """

    def __init__(
        self, rate: Rate, *, clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        self._interval = rate.period / rate.limit
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """How many keys are tracked now (for tests and metrics)."""
        return len(self._tat)

    def _check(self, key: str, now: float) -> tuple[float, float | None]:
        """The key's TAT if one more event were recorded now, and the wait before it is allowed."""
        tat = max(self._tat.get(key, now), now) + self._interval
        wait = tat - self.rate.period - now
        return tat, (wait if wait > _SLACK else None)

    def peek(self, key: str) -> float | None:
        """Like ``hit`` without recording: None if an event now would be allowed, else the wait."""
        return self._check(key, self._clock())[1]

    def hit(self, key: str) -> float | None:
        """Record one event for ``key``: None when allowed, else the seconds until one would be.

        A refused event is not recorded: a client gets in once it has waited ``Retry-After``, however
        often it retried meanwhile.
        """
        now = self._clock()
        self._evict_recovered(now)
        tat, wait = self._check(key, now)
        if wait is not None:
            return wait
        if key in self._tat:
            self._tat.move_to_end(key)
        elif len(self._tat) >= self.max_keys:
            self._tat.popitem(last=False)
        self._tat[key] = tat
        return None

    def _evict_recovered(self, now: float) -> None:
        # Stops at the first key still in debt: later keys may have recovered too, but each is
        # dropped within one period, when it reaches the old end (see the class docstring).
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[key]


FAILED_AUTH_RATE = Rate(20, 60.0)
"""Failed authentications allowed per client address: 20 a minute covers a misconfigured client
retrying with a stale credential, while guessing a 32+ character token or API key at one try every
3 seconds is hopeless. Fixed, not configurable: nobody needs more failures than that."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The server's limiters; a None limiter is off."""

    per_identity: RateLimiter | None = None
    failed_auth_per_address: RateLimiter | None = None

    @classmethod
    def from_setting(cls, text: str | None) -> RateLimits:
        """From MCP_RATE_LIMIT: unset or blank turns both off, else requests per identity at that rate
        and failed authentications per address at ``FAILED_AUTH_RATE``. ValueError on a bad rate."""
        if text is None or not text.strip():
            return cls()
        return cls(RateLimiter(parse_rate(text)), RateLimiter(FAILED_AUTH_RATE))
