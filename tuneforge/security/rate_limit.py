"""Token buckets: a burst of requests at once, then a steady rate, per client."""

from __future__ import annotations

import time

# Past this many clients, the buckets that are full again are forgotten (they would allow a
# whole burst anyway), so that many one-off clients cannot grow the table without end.
MAX_BUCKETS = 10_000


class RateLimiter:
    """`take(client)` says whether `client` may make a request now, and if not, how many
    seconds until it may. Runs on the event loop: no locking needed."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str, now: float | None = None) -> float:
        """0.0 when the request may go ahead (one token taken), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_full(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        for client, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[client]
