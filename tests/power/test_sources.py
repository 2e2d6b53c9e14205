"""Power readers on real UPSes: NUT's upsd + dummy-ups, and a Megatec/Q1 UPS on a socat pseudo-terminal.

Read like runbooks: the mains fail, the battery runs low, the mains come back
and flap, the UPS stops answering. Each test waits on conditions (generous
limits), never on a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from parkgate.common.power import PowerSettings, PowerSourceError, PowerState, PowerWatcher, Transition
from parkgate.common.power.nut import NutSource
from parkgate.common.power.q1 import Q1Source, parse_q1
from parkgate.ha.dummy_ups import DummyUps
from tests.fixtures.ups import Q1Ups


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def watch(watcher: PowerWatcher) -> tuple[asyncio.Task[None], list[Transition]]:
    seen: list[Transition] = []
    watcher.on_transition(seen.append)
    return asyncio.create_task(watcher.run()), seen


def nut_watcher(ups: DummyUps, **kw: object) -> PowerWatcher:
    return PowerWatcher.from_settings(PowerSettings(source="nut", port=ups.port, poll_seconds=0.2,
                                                    timeout_seconds=1.0, **kw))  # type: ignore[arg-type]


async def test_nut_mains_fail_then_battery_low_then_mains_back(dummy_ups: DummyUps) -> None:
    watcher = nut_watcher(dummy_ups, settle_seconds=1.0)
    task, seen = await watch(watcher)
    try:
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE from upsd")
        dummy_ups.set_status("OB", charge=60)
        await until(lambda: watcher.state == PowerState.ON_BATTERY, "ON_BATTERY after OB")
        dummy_ups.set_status("OB LB", charge=9)
        await until(lambda: watcher.state == PowerState.LOW_BATTERY, "LOW_BATTERY after OB LB")
        dummy_ups.set_status("OL CHRG", charge=12)
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE once the mains are steady")
    finally:
        task.cancel()
    assert [(t.old, t.new) for t in seen] == [
        (PowerState.UNKNOWN, PowerState.ONLINE), (PowerState.ONLINE, PowerState.ON_BATTERY),
        (PowerState.ON_BATTERY, PowerState.LOW_BATTERY), (PowerState.LOW_BATTERY, PowerState.ONLINE)]
    assert "battery low" in seen[2].why and "steady" in seen[3].why
    assert watcher.snapshot()["source"] == f"nut:ups@127.0.0.1:{dummy_ups.port}"


async def test_nut_charge_threshold_and_forced_shutdown(dummy_ups: DummyUps) -> None:
    watcher = nut_watcher(dummy_ups, low_charge_percent=30)
    task, seen = await watch(watcher)
    try:
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE")
        dummy_ups.set_status("OB", charge=25)  # no LB flag yet: our own threshold decides
        await until(lambda: watcher.state == PowerState.LOW_BATTERY, "LOW_BATTERY at 25% <= 30%")
        dummy_ups.set_status("FSD OB LB", charge=5)
        await until(lambda: watcher.state == PowerState.SHUTTING_DOWN, "SHUTTING_DOWN on FSD")
    finally:
        task.cancel()
    assert "charge 25% at or below 30%" in seen[-2].why and "forced shutdown" in seen[-1].why


async def test_nut_upsd_that_stops_answering_is_lost_contact_and_comes_back(dummy_ups: DummyUps) -> None:
    watcher = nut_watcher(dummy_ups, lost_after_seconds=1.0)
    task, seen = await watch(watcher)
    try:
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE")
        dummy_ups.pause()
        await until(lambda: watcher.state == PowerState.UNKNOWN, "UNKNOWN while upsd is silent")
        assert "lost contact" in seen[-1].why and "timed out" in seen[-1].why
        dummy_ups.resume()
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE again")
        dummy_ups.stop()  # upsd gone: connection refused, still lost contact
        await until(lambda: watcher.state == PowerState.UNKNOWN, "UNKNOWN with upsd stopped")
    finally:
        task.cancel()


def test_nut_unknown_ups_is_an_error(dummy_ups: DummyUps) -> None:
    with pytest.raises(PowerSourceError, match="UNKNOWN-UPS"):
        NutSource("nosuch", port=dummy_ups.port, timeout=2).read()


def test_q1_line_parsing() -> None:
    r = parse_q1(b"(208.4 140.0 208.4 034 59.9 2.10 35.0 11000010\r", 1.9, 2.3)
    assert r.on_battery and r.low_battery and r.forced_shutdown and r.charge_percent == 50
    ok = parse_q1(b"(230.4 140.0 230.0 021 50.0 2.27 35.0 00001000\r")
    assert not ok.on_battery and not ok.low_battery and ok.charge_percent == -1
    for bad in (b"(230.4 140.0\r", b"NAK\r", b"(230.4 140.0 230.0 021 50.0 2.27 35.0 0000100\x00\r", b"\xff" * 40):
        with pytest.raises(PowerSourceError, match="not a Q1 status line"):
            parse_q1(bad)


async def test_q1_serial_ups_on_battery_low_and_silent(q1_ups: Q1Ups) -> None:
    settings = PowerSettings(source="q1", device=q1_ups.pair.device, poll_seconds=0.1, timeout_seconds=0.5,
                             lost_after_seconds=1.0, settle_seconds=0.5)
    watcher = PowerWatcher.from_settings(settings)
    task, seen = await watch(watcher)
    try:
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE from Q1")
        q1_ups.utility_fail = True
        await until(lambda: watcher.state == PowerState.ON_BATTERY, "ON_BATTERY (bit 7)")
        q1_ups.battery_low = True
        await until(lambda: watcher.state == PowerState.LOW_BATTERY, "LOW_BATTERY (bit 6)")
        q1_ups.silent = True  # the UPS stops answering
        await until(lambda: watcher.state == PowerState.UNKNOWN, "UNKNOWN when the UPS is silent")
        assert "no answer to Q1" in seen[-1].why
        q1_ups.utility_fail = q1_ups.battery_low = q1_ups.silent = False
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE after the mains are back and steady")
        q1_ups.garbage = b"(garbled\x00\r"
        await until(lambda: watcher.state == PowerState.UNKNOWN, "UNKNOWN on garbage answers")
        assert "not a Q1 status line" in watcher.machine.error
    finally:
        task.cancel()


async def test_flapping_mains_keep_the_process_on_battery_until_steady(q1_ups: Q1Ups) -> None:
    """Mains off and on every 0.3 s never reach the 2 s settle time: ON_BATTERY holds; steady mains: ONLINE."""
    watcher = PowerWatcher(Q1Source(q1_ups.pair.device, timeout=0.5), PowerSettings(settle_seconds=2.0).machine(),
                           poll_seconds=0.05)
    task, seen = await watch(watcher)
    try:
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE")
        q1_ups.utility_fail = True
        await until(lambda: watcher.state == PowerState.ON_BATTERY, "ON_BATTERY")
        polls = q1_ups.asked
        for _ in range(8):
            q1_ups.utility_fail = not q1_ups.utility_fail
            start = q1_ups.asked
            await until(lambda s=start: q1_ups.asked >= s + 3, "three polls of this flap")
        assert q1_ups.asked - polls >= 24
        assert watcher.state == PowerState.ON_BATTERY, [t.sentence() for t in seen]
        q1_ups.utility_fail = False
        await until(lambda: watcher.state == PowerState.ONLINE, "ONLINE once steady")
    finally:
        task.cancel()
    assert [t.new for t in seen] == [PowerState.ONLINE, PowerState.ON_BATTERY, PowerState.ONLINE]


def test_settings_refuse_an_incomplete_source() -> None:
    with pytest.raises(ValueError, match="needs device"):
        PowerSettings(source="q1")
    with pytest.raises(ValueError, match="source"):
        PowerSettings(source="apc")  # type: ignore[arg-type]
