"""Usage of served models: every request to a serving endpoint is counted in memory, per
minute, model and endpoint, and added to the `model_usage` table at each flush (every
FLUSH_SECONDS, at shutdown, and before a usage report is read). A minute holds its requests,
errors, tokens and a fixed latency histogram (LATENCY_BOUNDS_MS), from which percentiles are
read as Prometheus reads them: linearly within the bucket where the rank falls.

Requests are counted under the model they resolved to (`NAME@alias` as the version it named
at that moment), with that model's registry name and version. A request that failed before
its model was found (an unknown name) is counted per endpoint only, in /metrics: arbitrary
names would otherwise grow the table without bound.

Besides the minutes, the meter keeps totals since the process started, which /metrics shows
as Prometheus counters and histograms.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, TuneforgeError
from tuneforge.registry.service import resolve_reference

log = logging.getLogger(__name__)

# Upper bounds of the latency buckets (milliseconds), about 1.5x apart; a last bucket holds
# what is slower than 2 minutes. Stored minutes hold counts per bucket: changing the bounds
# needs a migration of `model_usage.latency_buckets`.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000, 120000,
)  # fmt: skip
FLUSH_SECONDS = 10.0
# Minutes are kept this long (the longest window a report reads), pruned about hourly.
KEEP_SECONDS = 90 * 86400
PRUNE_EVERY_SECONDS = 3600.0
# How long a model id's registry name and version are remembered (a version, once made,
# keeps its model id; only a deleted one would change).
VERSION_CACHE_SECONDS = 60.0
# The endpoints that are counted, as /metrics labels them.
ENDPOINTS = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions", "/v1/classifications")


@dataclass
class Counts:
    """Requests counted together: one minute's of a model and endpoint, or since start."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_sum: float = 0.0
    latency_ms_max: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def add(self, latency_ms: float, error: bool, prompt: int, completion: int) -> None:
        self.requests += 1
        self.errors += int(error)
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.latency_ms_sum += latency_ms
        self.latency_ms_max = max(self.latency_ms_max, latency_ms)
        self.buckets[bucket_of(latency_ms)] += 1

    def merge(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_ms_max = max(self.latency_ms_max, other.latency_ms_max)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> Counts:
        return cls(
            requests=row["requests"],
            errors=row["errors"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            latency_ms_sum=row["latency_ms_sum"],
            latency_ms_max=row["latency_ms_max"],
            buckets=list(row["latency_buckets"]),
        )

    def summary(self) -> dict[str, Any]:
        """What a usage report shows of these requests."""
        latency = {
            "mean": round(self.latency_ms_sum / self.requests, 3) if self.requests else None,
            "p50": percentile(self.buckets, 0.50, self.latency_ms_max),
            "p95": percentile(self.buckets, 0.95, self.latency_ms_max),
            "p99": percentile(self.buckets, 0.99, self.latency_ms_max),
            "max": round(self.latency_ms_max, 3) if self.requests else None,
        }
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": latency,
        }


def bucket_of(latency_ms: float) -> int:
    """The index of the histogram bucket that holds `latency_ms`."""
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def percentile(buckets: list[int], q: float, observed_max: float) -> float | None:
    """The q-quantile (0 < q <= 1) of the latencies counted in `buckets`: linear within the
    bucket where rank q*N falls, never above the slowest request seen; None for none."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_MS[i - 1] if i > 0 else 0.0
            upper = LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else observed_max
            value = lower + (upper - lower) * (rank - seen) / count
            return round(min(value, observed_max), 3)
        seen += count
    return round(observed_max, 3)


class ServedRequest:
    """One request being served. The route says when its model is found (`found`) and how
    many tokens it read and wrote; the meter times it and counts it when it ends."""

    def __init__(self, endpoint: str, model: str):
        self.endpoint = endpoint
        self.model = model
        self.started = time.monotonic()
        self.model_found = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.handed_over = False

    def found(self) -> None:
        self.model_found = True

    def tokens(self, prompt: int = 0, completion: int = 0) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion


class UsageMeter:
    """Counts served requests (see the module's docstring); thread-safe."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        # (minute, model id, endpoint) -> (registry name, version, counts), not yet stored
        self._pending: dict[tuple[float, str, str], tuple[str | None, int | None, Counts]] = {}
        # (endpoint, model id) -> counts since start; endpoint -> requests of unknown models
        self.totals: dict[tuple[str, str], Counts] = {}
        self.unknown_model: dict[str, int] = {}
        self._versions: dict[str, tuple[float, str | None, int | None]] = {}
        self._flush_lock = threading.Lock()

    @contextmanager
    def track(self, endpoint: str, model: str) -> Iterator[ServedRequest]:
        """Time and count the request that the block serves; an exception out of it is an
        error. A streamed answer is handed to `streamed`, which counts it when it ends."""
        served = ServedRequest(endpoint, model)
        try:
            yield served
        except BaseException:
            self.record(served, error=True)
            raise
        if not served.handed_over:
            self.record(served, error=False)

    def streamed(self, served: ServedRequest, chunks: Iterator[Any]) -> Iterator[Any]:
        """`chunks`, counting the request once they end (an exception while streaming is an
        error; a client that goes away ends it too)."""
        served.handed_over = True  # now, before the block that `track` times has ended

        def counted() -> Iterator[Any]:
            failed = False
            try:
                yield from chunks
            except GeneratorExit:  # the client went away: not the model's error
                raise
            except BaseException:
                failed = True
                raise
            finally:
                self.record(served, error=failed)

        return counted()

    def record(self, served: ServedRequest, *, error: bool) -> None:
        latency_ms = (time.monotonic() - served.started) * 1000.0
        identity = self._identity(served.model) if served.model_found else None
        with self._lock:
            if identity is None:
                self.unknown_model[served.endpoint] = self.unknown_model.get(served.endpoint, 0) + 1
                return
            model_id, registered, version = identity
            minute = math.floor(time.time() / 60.0) * 60.0
            key = (minute, model_id, served.endpoint)
            if key not in self._pending:
                self._pending[key] = (registered, version, Counts())
            counted = (served.prompt_tokens, served.completion_tokens)
            self._pending[key][2].add(latency_ms, error, *counted)
            total = self.totals.setdefault((served.endpoint, model_id), Counts())
            total.add(latency_ms, error, *counted)

    def _identity(self, name: str) -> tuple[str, str | None, int | None] | None:
        """(model id, registry name, version) of a requested model name, or None when it no
        longer resolves."""
        try:
            model_id = resolve_reference(self.store, name) if "@" in name else name
            now = time.monotonic()
            cached = self._versions.get(model_id)
            if cached is None or now - cached[0] > VERSION_CACHE_SECONDS:
                row = self.store.version_of_model(model_id)
                registered, version = (row["name"], row["version"]) if row else (None, None)
                cached = (now, registered, version)
                self._versions[model_id] = cached
        except TuneforgeError:
            return None
        return model_id, cached[1], cached[2]

    def snapshot(self) -> tuple[dict[tuple[str, str], Counts], dict[str, int]]:
        """Copies of the totals since start, per (endpoint, model id), and of the requests
        per endpoint that named no model."""
        with self._lock:
            totals = {key: replace(c, buckets=list(c.buckets)) for key, c in self.totals.items()}
            return totals, dict(self.unknown_model)

    def flush(self) -> None:
        """Add the counted minutes to the database; kept for the next flush if that fails."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            rows = [
                {
                    "minute": minute,
                    "model": model,
                    "endpoint": endpoint,
                    "registered_model": registered,
                    "version": version,
                    "requests": counts.requests,
                    "errors": counts.errors,
                    "prompt_tokens": counts.prompt_tokens,
                    "completion_tokens": counts.completion_tokens,
                    "latency_ms_sum": counts.latency_ms_sum,
                    "latency_ms_max": counts.latency_ms_max,
                    "latency_buckets": counts.buckets,
                }
                for (minute, model, endpoint), (registered, version, counts) in pending.items()
            ]
            try:
                self.store.add_usage(rows)
            except Exception:
                log.exception("storing the usage of served models failed; kept for the next try")
                with self._lock:
                    for key, (registered, version, counts) in pending.items():
                        if key in self._pending:
                            self._pending[key][2].merge(counts)
                        else:
                            self._pending[key] = (registered, version, counts)

    def run_flushes(self, stop: threading.Event, every: float = FLUSH_SECONDS) -> None:
        """Flush every `every` seconds until `stop` is set, then once more; about hourly,
        delete the minutes older than KEEP_SECONDS."""
        pruned = -PRUNE_EVERY_SECONDS  # the first flush prunes
        while not stop.wait(every):
            self.flush()
            if time.monotonic() - pruned >= PRUNE_EVERY_SECONDS:
                pruned = time.monotonic()
                try:
                    self.store.prune_usage(time.time() - KEEP_SECONDS)
                except Exception:
                    log.exception("pruning old usage minutes failed")
        self.flush()


# -- reports -------------------------------------------------------------------------------

WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
WINDOW = re.compile(r"([0-9]{1,9})([smhd]?)")
MAX_WINDOW_SECONDS = KEEP_SECONDS
# A report's series has at most this many points: minutes are summed into longer steps.
MAX_POINTS = 120


def window_seconds(text: str, param: str = "window") -> int:
    """`15m`, `1h`, `24h`, `7d` or plain seconds -> seconds; InvalidRequestError naming
    `param` for anything else, or for a window longer than 90 days."""
    match = WINDOW.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise InvalidRequestError(
            f"{param}: {text[:40]!r} is not a time window; give a number with s, m, h or d "
            "(e.g. 15m, 24h, 7d) or seconds.",
            param=param,
        )
    digits, unit = match.group(1), WINDOW_UNITS[match.group(2) or "s"]
    seconds = int(digits) * unit
    if seconds > MAX_WINDOW_SECONDS:
        raise InvalidRequestError(f"{param}: at most 90 days (90d).", param=param)
    return seconds


def usage_report(rows: list[dict[str, Any]], *, since: float, until: float) -> dict[str, Any]:
    """Totals, one entry per model version and endpoint, and a time series, of the stored
    minutes `rows` of the window [since, until)."""
    totals = Counts()
    groups: dict[tuple[str, str | None, int | None, str], Counts] = {}
    span = until - since
    step = max(60, math.ceil(span / MAX_POINTS / 60) * 60)
    first = math.floor(since / step) * step
    series: dict[float, Counts] = {}
    for row in rows:
        counts = Counts.of_row(row)
        totals.merge(counts)
        key = (row["model"], row["registered_model"], row["version"], row["endpoint"])
        groups.setdefault(key, Counts()).merge(counts)
        start = first + math.floor((row["minute"] - first) / step) * step
        series.setdefault(start, Counts()).merge(counts)
    return {
        "object": "model.usage",
        "since": since,
        "until": until,
        "step_seconds": step,
        "totals": totals.summary(),
        "data": [
            {
                "model": model,
                "registered_model": registered,
                "version": version,
                "endpoint": endpoint,
                **counts.summary(),
            }
            for (model, registered, version, endpoint), counts in sorted(
                groups.items(), key=lambda item: (-(item[0][2] or 0), item[0][0], item[0][3])
            )
        ],
        "series": [{"start": start, **_point(counts)} for start, counts in sorted(series.items())],
    }


def _point(counts: Counts) -> dict[str, Any]:
    summary = counts.summary()
    latency = summary.pop("latency_ms")
    return {**summary, "p50_ms": latency["p50"], "p95_ms": latency["p95"]}
