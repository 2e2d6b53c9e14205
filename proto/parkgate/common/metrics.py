"""Prometheus metrics of every parkgate process: the server, the gate agent, and (later) the site edge.

One module, so every process names the same thing the same way and one
Grafana dashboard (ops/grafana/parkgate-dashboard.json) reads them all. The
metrics are process-wide objects in prometheus-client's default registry; a
process exposes them with :func:`serve_metrics` on its own HTTP port (off
unless configured: ``metrics.listen``).

Cheap on the hot path: the gate pipeline counts once per *batch*
(:func:`count_decisions`, :meth:`BatchHistogram.observe_many`), never with a
lock per validation. prometheus-client's own ``Histogram.observe`` takes a
lock per call; :class:`BatchHistogram` is fed from one event loop and only
read (as a copy) by the scraping thread.

What a site edge uses (it is built elsewhere): :data:`VALIDATIONS` via
:func:`count_decisions` with ``decided_by="edge"``, :data:`CONNECTED_STREAMS`,
:func:`track_offline_journal` for its store-and-forward queue,
:func:`set_power_state` from its UPS watcher, and :func:`serve_metrics`.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Enum, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Seconds from a validation's arrival to its answer: a turnstile should answer within a few hundred ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

DecidedBy = Literal["server", "before_database", "gate", "edge"]


class BatchHistogram(Collector):
    """A histogram observed a batch of values at a time from one thread (an event loop), read by the scraper.

    Per value: a bisect and an integer add, no lock. The scraping thread
    copies the bucket list (atomic under the GIL) and derives the count from
    the copy, so ``+Inf`` always equals ``_count`` in what it exposes.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], labelnames: Sequence[str] = (),
                 registry: object = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.labelnames = list(labelnames)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        if registry is not None:
            registry.register(self)  # type: ignore[attr-defined]

    def observe_many(self, values: Iterable[float], *labels: str) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        counts, total = series
        bounds = self.bounds
        added = 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            added += value
        total[0] += added

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in list(self._series.items()):
            snapshot = list(counts)
            cumulative, buckets = 0, []
            for bound, n in zip([*self.bounds, float("inf")], snapshot, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            family.add_metric(list(labels), buckets, total[0])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


# --- gate decisions -----------------------------------------------------------------------------

VALIDATIONS = Counter(
    "parkgate_validations", "Gate decisions, by who decided, the reason and whether the person was let through",
    ["decided_by", "reason", "result"],
)
DECISION_LATENCY = BatchHistogram(
    "parkgate_decision_latency_seconds",
    "Seconds from a validation's arrival at the server to its decision (before_database: refused by the code check)",
    LATENCY_BUCKETS, ["path"],
)
BATCH_SIZE = Histogram("parkgate_batch_size", "Validations decided per database round trip of the gate pipeline",
                       buckets=BATCH_BUCKETS)
CONNECTED_STREAMS = Gauge("parkgate_connected_streams", "Open long-lived streams on this process, by kind",
                          ["kind"])

# --- offline work (gate agent, site edge) ---------------------------------------------------------

OFFLINE_JOURNAL_DEPTH = Gauge("parkgate_offline_journal_depth",
                              "Decisions made without a server, kept on disk until a server takes them")
OFFLINE_FORWARD_LAG = Gauge("parkgate_offline_forward_lag_seconds",
                            "Age of the oldest decision still waiting to be forwarded (0 when none waits)")

# --- power (S30), sales ---------------------------------------------------------------------------

POWER_STATES = ("mains", "on_battery", "low_battery", "shutting_down", "unknown")
POWER_STATE = Enum("parkgate_power_state", "The power source this process runs on, as its UPS watcher last said",
                   states=list(POWER_STATES))
SALES = Counter("parkgate_sales_payments", "Payments taken with new orders, by payment method",
                ["payment_method", "currency"])
SALES_AMOUNT = Counter("parkgate_sales_amount_minor", "Money taken with new orders, in minor units (cents)",
                       ["payment_method", "currency"])


def count_decisions(decided_by: DecidedBy, reasons: Iterable[tuple[str, bool]]) -> None:
    """Count a batch of decisions given as (reason name, allowed): one labelled increment per distinct pair."""
    for (reason, allowed), n in Tally(reasons).items():
        VALIDATIONS.labels(decided_by, reason, "allow" if allowed else "deny").inc(n)


def set_power_state(state: str) -> None:
    """What the UPS watcher (server, gate agent, site edge) says: one of :data:`POWER_STATES`."""
    if state not in POWER_STATES:
        raise ValueError(f"power state {state!r}: expected one of {', '.join(POWER_STATES)}")
    POWER_STATE.state(state)


def count_sale(payments: Iterable[tuple[str, int]], currency: str) -> None:
    """A new order's payments as (method, amount in minor units)."""
    for method, amount in payments:
        SALES.labels(method, currency).inc()
        SALES_AMOUNT.labels(method, currency).inc(amount)


def track_offline_journal(depth: Callable[[], int], oldest_age_seconds: Callable[[], float]) -> None:
    """Read the journal's depth and its oldest entry's age at each scrape (the scraper's thread only reads)."""
    OFFLINE_JOURNAL_DEPTH.set_function(lambda: float(depth()))
    OFFLINE_FORWARD_LAG.set_function(lambda: float(oldest_age_seconds()))


# --- database pools ----------------------------------------------------------------------------

class PoolCollector(Collector):
    """Size, idle connections and waiting requests of each registered connection pool, read at scrape time."""

    def __init__(self) -> None:
        self._pools: dict[str, Callable[[], dict[str, int]]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, stats: Callable[[], dict[str, int]]) -> None:
        with self._lock:
            self._pools[name] = stats

    def remove(self, name: str) -> None:
        with self._lock:
            self._pools.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("parkgate_db_pool_connections", "Connections the pool holds", labels=["pool"])
        idle = GaugeMetricFamily("parkgate_db_pool_idle", "Connections in the pool not lent out", labels=["pool"])
        waiting = GaugeMetricFamily("parkgate_db_pool_waiting", "Requests waiting for a connection", labels=["pool"])
        with self._lock:
            pools = list(self._pools.items())
        for name, stats in pools:
            values = stats()
            size.add_metric([name], values.get("pool_size", 0))
            idle.add_metric([name], values.get("pool_available", 0))
            waiting.add_metric([name], values.get("requests_waiting", 0))
        yield from (size, idle, waiting)


DB_POOLS = PoolCollector()
REGISTRY.register(DB_POOLS)


# --- the HTTP endpoint ---------------------------------------------------------------------------

@dataclass
class MetricsEndpoint:
    """The running ``/metrics`` HTTP server of this process."""

    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(listen: str) -> MetricsEndpoint:
    """Serve ``/metrics`` on ``HOST:PORT`` (port 0: a free one) in a daemon thread; raises OSError if taken."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics listen address: expected HOST:PORT, got {listen!r}")
    host = host.strip("[]")
    server, thread = start_http_server(int(port), addr=host)
    return MetricsEndpoint(server, thread, host)
