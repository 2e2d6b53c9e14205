"""Metrics as an SRE sees them: the real Prometheus (Debian's package) scrapes a running server.

A server with ``metrics.listen`` on a free loopback port admits a person at
a gate and sells a ticket; Prometheus, started with a temporary
configuration and storage, scrapes it, and its HTTP API answers the
validations counter, the decision latency histogram and the sales by payment
method. The shipped ops/prometheus.yml passes promtool, and every metric
the Grafana dashboard queries is one a parkgate process exposes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from parkgate.common import metrics
from parkgate.server.pg import free_port
from tests.fixtures.server import RunningServer, start_server, stop_server

from .flow_park import FlowPark, open_flow_park

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
PARK = "prompark"


def _need(path: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: apt-get install prometheus (ops/bootstrap.sh installs it)")


@pytest.fixture(scope="module")
async def metered(module_dsn: str) -> AsyncIterator[RunningServer]:
    running = await start_server(module_dsn, **{"metrics.listen": "127.0.0.1:0"})
    yield running
    await stop_server(running)


@pytest.fixture(scope="module")
async def park(metered: RunningServer, module_dsn: str) -> AsyncIterator[FlowPark]:
    p = await open_flow_park([metered], module_dsn, PARK)
    yield p
    await p.close()


@pytest.fixture
def prometheus(metered: RunningServer, tmp_path: Path) -> Iterator[str]:
    """The real Prometheus scraping the server every second; yields its HTTP API's base URL."""
    _need(PROMETHEUS)
    endpoint = metered.server.metrics_endpoint
    assert endpoint is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: parkgate-server\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{endpoint.port}']}}]\n")
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def _until(base: str, promql: str, at_least: float, timeout: float = 90.0) -> float:
    """Poll the query until its single value reaches ``at_least`` (Prometheus scrapes each second)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = _query(base, promql)
        except OSError as exc:  # Prometheus still starting
            last = exc
        else:
            last = result
            if result and float(result[0]["value"][1]) >= at_least:
                return float(result[0]["value"][1])
        time.sleep(0.5)
    pytest.fail(f"Prometheus never answered {promql} >= {at_least} within {timeout}s; last: {last}")


async def test_prometheus_scrapes_a_gate_admission(park: FlowPark, prometheus: str) -> None:
    import asyncio

    gate = await park.gate("prom-in")
    ticket, = await park.sell("single")
    assert (await gate.validate("prom-1", code=ticket.code)).allow
    allowed = 'sum(parkgate_validations_total{job="parkgate-server",decided_by="server",result="allow"})'
    await asyncio.to_thread(_until, prometheus, 'up{job="parkgate-server"}', 1)
    await asyncio.to_thread(_until, prometheus, allowed, 1)
    await asyncio.to_thread(_until, prometheus, 'sum(parkgate_decision_latency_seconds_count{path="database"})', 1)
    await asyncio.to_thread(_until, prometheus, 'sum(parkgate_sales_payments_total{payment_method="cash"})', 1)
    await asyncio.to_thread(_until, prometheus, 'sum(parkgate_connected_streams{kind="gate"})', 1)
    pool = await asyncio.to_thread(_query, prometheus, "parkgate_db_pool_connections")
    assert pool and float(pool[0]["value"][1]) >= 1, pool


async def test_the_metrics_endpoint_speaks_prometheus_text(metered: RunningServer) -> None:
    import asyncio

    endpoint = metered.server.metrics_endpoint
    assert endpoint is not None and endpoint.host == "127.0.0.1"

    def fetch() -> tuple[str, str]:
        with urllib.request.urlopen(endpoint.url, timeout=10) as reply:
            return reply.headers["Content-Type"], reply.read().decode()

    content_type, text = await asyncio.to_thread(fetch)
    assert content_type.startswith("text/plain")
    for family in ("parkgate_validations", "parkgate_decision_latency_seconds", "parkgate_batch_size",
                   "parkgate_connected_streams", "parkgate_db_pool_connections", "parkgate_power_state",
                   "parkgate_offline_journal_depth", "parkgate_sales_payments"):
        assert re.search(rf"^# TYPE {family}(_total)? ", text, re.MULTILINE), family


def test_batch_histogram_buckets_add_up() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    histogram = metrics.BatchHistogram("t_latency_seconds", "test", [0.01, 0.1, 1.0], ["path"], registry=registry)
    histogram.observe_many([0.005, 0.01, 0.05, 0.5, 5.0], "db")
    text = generate_latest(registry).decode()
    assert 't_latency_seconds_bucket{le="0.01",path="db"} 2.0' in text  # le is inclusive
    assert 't_latency_seconds_bucket{le="0.1",path="db"} 3.0' in text
    assert 't_latency_seconds_bucket{le="+Inf",path="db"} 5.0' in text
    assert 't_latency_seconds_count{path="db"} 5.0' in text
    with pytest.raises(ValueError):
        metrics.set_power_state("on fire")


def test_shipped_prometheus_config_and_grafana_dashboard() -> None:
    _need(PROMTOOL)
    checked = subprocess.run([PROMTOOL, "check", "config", str(ROOT / "ops/prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = json.loads((ROOT / "ops/grafana/parkgate-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exposed = {m.name for m in metrics.REGISTRY.collect()} | {"up"}
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(parkgate_[a-z_]+|up)\b", target["expr"]))
            assert names, target["expr"]
            for name in names:
                base = re.sub(r"_(total|bucket|count|sum|created)$", "", name)
                assert name in exposed or base in exposed, (panel["title"], name)


def test_the_metrics_setting() -> None:
    from parkgate.server.config import ConfigError, load_settings

    assert load_settings(None).metrics.address("") is None                       # `parkgate server`: off
    assert load_settings(None).metrics.address("127.0.0.1:9464") == "127.0.0.1:9464"  # `parkgate up`: on
    assert load_settings(None, **{"metrics.listen": "off"}).metrics.address("127.0.0.1:9464") is None
    assert load_settings(None, **{"metrics.listen": "127.0.0.1:9500"}).metrics.address("") == "127.0.0.1:9500"
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        load_settings(None, **{"metrics.listen": "9464"})
