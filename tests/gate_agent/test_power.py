"""A gate agent on a UPS (real upsd + dummy-ups): on battery it decides locally and says so; mains back, it forwards.

Runbook: the gate's mains fail -> its heartbeats say on_battery and the server
records it (and writes the transition in the operation log); a visitor's ticket is decided at the gate (the decision engine, a
durable journal), the server hears nothing yet; the mains come back and stay ->
the gate asks the server again and hands the journalled admission over, counted once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from parkgate.ha.dummy_ups import DummyUps
from tests.power.test_sources import until

from .conftest import Rig, Site
from .test_agent import OPENED


async def test_gate_on_battery_decides_locally_then_forwards_when_mains_are_back(
        site: Site, make_rig: Callable[..., Rig], dummy_ups: DummyUps, tmp_path: Path) -> None:
    state = tmp_path / "state"
    power = (f'[power]\nsource = "nut"\nport = {dummy_ups.port}\npoll_seconds = 0.2\nsettle_seconds = 0.5\n'
             f'timeout_seconds = 1.0\n')
    rig = await make_rig("pw-gate", extra=power, start=False)
    rig.config_path.write_text(rig.config_path.read_text().replace("[gate]\n", f'[gate]\nstate_dir = "{state}"\n', 1))
    agent = await rig.start()
    ticket, later = await site.sell("single", 2)
    await until(lambda: agent.power.state == "online", "the gate's UPS read")

    dummy_ups.set_status("OB", charge=80)
    await until(lambda: agent.deciding_locally, "the gate deciding locally on battery")
    await site.until_sql("SELECT on_battery FROM gate_connections WHERE device_id = %s", "pw-gate",
                         expect=[(True,)], timeout=20)
    mark = rig.board.mark()
    rig.scan(ticket.code)
    await rig.board.wait_for(OPENED, mark)
    await rig.board.wait_for(r"^passage: PASSED", mark)
    assert [a.request_id for a in agent.disk.admissions] and (state / "offline.jsonl").read_text().count("\n") == 1
    # held while on battery: two rounds of the gate's clock later (each offers the journal when it may) no
    # offer was started and the server has nothing
    ticks = agent.ticks
    await until(lambda: agent.ticks >= ticks + 2, "two rounds of the gate's clock after the passage")
    assert agent._forwarding is None and len(agent.disk.admissions) == 1
    assert site.sql("SELECT count(*) FROM validations WHERE ticket_id = %s", ticket.id) == [(0,)]
    assert agent.link is not None  # the server is there: the gate chose not to wait for it

    dummy_ups.set_status("OL")
    await until(lambda: not agent.deciding_locally, "the gate back on mains after the settle time")
    await site.until_sql("SELECT allow, passed_at IS NOT NULL FROM validations WHERE ticket_id = %s", ticket.id,
                         expect=[(True, True)], timeout=20)
    await site.until_sql("SELECT on_battery FROM gate_connections WHERE device_id = %s", "pw-gate",
                         expect=[(False,)], timeout=20)
    # each of the gate's power transitions is one record of the operation log, written by the server it talks to
    await site.until_sql("SELECT outcome FROM audit_log WHERE method = 'Power/Transition' AND device_id = %s "
                         "ORDER BY id", "pw-gate", expect=[("ON_BATTERY",), ("ONLINE",)], timeout=20)
    await until(lambda: not agent.disk.admissions, "the journal emptied")
    mark = rig.board.mark()
    rig.scan(later.code)  # on mains: the server decides again
    await rig.board.wait_for(OPENED, mark)
    await site.until_sql("SELECT allow FROM validations WHERE ticket_id = %s", later.id, expect=[(True,)])
    await rig.stop()
    await asyncio.sleep(0)
