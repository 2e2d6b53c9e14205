"""One device flooding its stream beside normal gates: it gets DEVICE_FLOODING, they keep their pace.

The flooding device pushes thousands of validations without waiting; its share
(validations in flight, messages a second) is answered at once with
DEVICE_FLOODING instead of queueing in the pipeline every gate shares. The
normal gates' latencies before and during the flood are printed side by side
(no time is asserted); what is asserted is that none of their scans was
refused for load and that the flood was answered in full.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from parkgate.clients.gate.link import GateLink, Hello
from tests.fixtures.park import open_park, rid
from tests.fixtures.server import RunningServer

PARK = "floodpark"
NORMAL_GATES = 4
SCANS = 25
FLOOD = 3000


async def _scan_steadily(link: GateLink, code: str) -> tuple[list[float], list[str]]:
    latencies, reasons = [], []
    for _ in range(SCANS):
        started = time.perf_counter()
        result = await link.validate(rid(), code=code, timeout=60)
        latencies.append(time.perf_counter() - started)
        reasons.append(result.reason)
    return latencies, reasons


async def _all_gates(links: list[GateLink], codes: list[str]) -> tuple[list[float], list[str]]:
    runs = await asyncio.gather(*(_scan_steadily(link, code) for link, code in zip(links, codes, strict=True)))
    return [x for lat, _ in runs for x in lat], [r for _, reasons in runs for r in reasons]


def _ms(values: list[float]) -> str:
    data = sorted(values)
    return (f"p50 {statistics.median(data) * 1000:.1f} ms, p99 {data[int(0.99 * (len(data) - 1))] * 1000:.1f} ms, "
            f"max {data[-1] * 1000:.1f} ms")


async def test_a_flooding_device_is_refused_and_the_other_gates_keep_their_pace(
    parkgate_server: RunningServer, module_dsn: str
) -> None:
    park = await open_park([parkgate_server], module_dsn, PARK, "Flood Park")
    await park.product("day")
    tickets = await park.sell("day", NORMAL_GATES + 1)
    links = []
    for n in range(NORMAL_GATES + 1):
        secret = await park.register_gate(f"flood-gate-{n}")
        link = GateLink(parkgate_server.address, Hello(f"flood-gate-{n}", secret, "in", PARK))
        await link.open()
        links.append(link)
    normal, flooder = links[:NORMAL_GATES], links[NORMAL_GATES]
    codes = [t.code for t in tickets[:NORMAL_GATES]]
    try:
        quiet, quiet_reasons = await _all_gates(normal, codes)
        flood = asyncio.gather(*(flooder.validate(f"flood-{k}", code=tickets[-1].code, timeout=120)
                                 for k in range(FLOOD)))
        busy, busy_reasons = await _all_gates(normal, codes)
        flooded = await flood
    finally:
        await asyncio.gather(*(link.close() for link in links))
    print(f"\nnormal gates, quiet:    {_ms(quiet)}\nnormal gates, flooded:  {_ms(busy)}")
    refused = sum(r.reason == "DEVICE_FLOODING" for r in flooded)
    print(f"flooding device: {FLOOD} validations sent at once, {refused} answered DEVICE_FLOODING")
    assert len(flooded) == FLOOD  # every validation of the flood was answered
    assert refused > FLOOD // 2
    # what got through was decided like any scan: one admission, the rest already used
    assert sum(r.allow for r in flooded) == 1
    assert {r.reason for r in flooded} <= {"OK", "ALREADY_USED", "DEVICE_FLOODING"}
    for reasons in (quiet_reasons, busy_reasons):
        assert not {"DEVICE_FLOODING", "SERVER_OVERLOADED"} & set(reasons), reasons
        assert set(reasons) <= {"OK", "ALREADY_USED"}, set(reasons)
