"""Gates against real servers and PostgreSQL: the stream, the batch pipeline's rules, capacity, emergency.

Read as a runbook: a gate connects with its secret, a sold ticket is admitted
once, a forged code is refused, a turnstile that did not turn gives the entry
back, the park pauses at its cap and resumes below it, an emergency opens
every gate on every server, and fifty gates on two servers presenting one
single-use ticket a thousand times admit exactly one person.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import orjson
import pytest

from parkgate import native
from parkgate.clients.gate.link import Command, GateLink, Hello, LinkError
from parkgate.v1 import admin_pb2, catalog_pb2, gate_pb2, gate_pb2_grpc, sales_pb2
from tests.fixtures.park import TestPark, open_park, rid, signature_forged
from tests.fixtures.server import RunningServer, reason_of, start_server, stop_server

ZONE = ZoneInfo("Asia/Shanghai")
PARK = "gpark"


def local_minute(offset_minutes: int = 0) -> int:
    now = datetime.now(ZONE) + timedelta(minutes=offset_minutes)
    return now.hour * 60 + now.minute


@dataclass
class Park(TestPark):
    links: list[GateLink] = field(default_factory=list)

    async def gate(self, device_id: str, *, direction: str = "in", attraction: str = "", server: int = 0,
                   confirms_passage: bool = False) -> GateLink:
        secret = await self.register_gate(device_id, direction=direction, attraction=attraction)
        link = GateLink(self.servers[server].address, Hello(device_id, secret, direction, PARK,  # type: ignore[arg-type]
                                                            confirms_passage=confirms_passage))
        await link.open(timeout=60)  # generous: fifty gates say hello at once on a busy machine
        self.links.append(link)
        return link


@pytest.fixture(scope="module")
async def park(parkgate_server: RunningServer, module_dsn: str) -> AsyncIterator[Park]:
    second = await start_server(module_dsn)
    opened = await open_park([parkgate_server, second], module_dsn, PARK, "Gate Park")
    p = Park(**{f.name: getattr(opened, f.name) for f in fields(TestPark)})
    for a in ("coaster", "wheel"):
        await p.admin.catalog.PutAttraction(catalog_pb2.PutAttractionRequest(attraction=catalog_pb2.Attraction(
            id=a, park_id=PARK, name=a)), metadata=p.admin.metadata)
    await p.product("single", entries_total=1)
    yield p
    for link in p.links:
        await link.close()
    await stop_server(second)


async def test_a_sold_ticket_is_admitted_once_and_a_forged_code_never(park: Park) -> None:
    gate = await park.gate("g-main")
    assert gate.welcome is not None and gate.welcome.keys and not gate.welcome.emergency_open
    ticket, = await park.sell("single")
    first = await gate.validate("r1", code=ticket.code)
    assert (first.allow, first.reason, first.entries_left, first.persons) == (True, "OK", 0, 1)
    assert first.display_text == "Welcome"
    second = await gate.validate("r2", code=ticket.code)
    assert (second.allow, second.reason) == (False, "ALREADY_USED")
    retry = await gate.validate("r1", code=ticket.code)  # the first request again: its first decision
    assert (retry.allow, retry.reason) == (True, "OK")
    assert park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]

    validations_before = park.sql("SELECT count(*) FROM validations")
    forged = signature_forged(ticket.code)  # canonical, the right key id, a signature the key never made
    assert (await gate.validate("r3", code=forged)).reason == "FORGED_CODE"
    mangled = ticket.code[:-4] + ("AAAA" if not ticket.code.endswith("AAAA") else "BBBB")
    assert (await gate.validate("r3b", code=mangled)).reason in ("FORGED_CODE", "MALFORMED_CODE",
                                                                  "NON_CANONICAL_ENCODING")
    assert park.sql("SELECT count(*) FROM validations") == validations_before  # forged codes never reach the database
    assert (await gate.validate("r4", code="HELLO WORLD")).reason in ("WRONG_SCHEME", "MALFORMED_CODE")
    assert (await gate.validate("r5", code=ticket.code + "\r\n")).reason == "ALREADY_USED"  # scanners add CR/LF
    assert (await gate.validate("r6", card_uid="DEADBEEF")).reason == "UNKNOWN_CARD"


async def test_unknown_or_forged_devices_are_refused(park: Park) -> None:
    for hello, reason in (
        (Hello("no-such-gate", "x", "in", PARK), "UNKNOWN_DEVICE"),
        (Hello(f"{PARK}-window", "whatever", "in", PARK), "BAD_DEVICE_CREDENTIALS"),
    ):
        with pytest.raises(LinkError) as err:
            await GateLink(park.servers[0].address, hello).open()
        assert err.value.reason == reason
    await park.gate("g-forge")
    with pytest.raises(LinkError) as err:
        await GateLink(park.servers[0].address, Hello("g-forge", "not-its-secret", "in", PARK)).open()
    assert err.value.reason == "BAD_DEVICE_CREDENTIALS"


async def test_refunded_expired_night_window_and_wrong_attraction_are_refused(park: Park) -> None:
    gate = await park.gate("g-rules")
    coaster = await park.gate("g-coaster", attraction="coaster")
    refunded, kept = await park.sell("single", 2)
    await park.admin.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[refunded.id],
                                                          reason_id="weather"), metadata=park.admin.metadata)
    assert (await gate.validate(rid(), code=refunded.code)).reason == "REFUNDED"
    assert (await coaster.validate(rid(), code=kept.code)).reason == "NOT_VALID_FOR_ATTRACTION"

    await park.product("rides", entries_total=0, attraction_ids=["coaster"])
    ride, = await park.sell("rides")
    assert (await coaster.validate(rid(), code=ride.code)).allow

    # A code signed with the installation's key for a day that is over: the gate's own check refuses it.
    (key_id, seed), = park.sql("SELECT key_id, seed FROM signing_keys WHERE state = 'active'")
    (number,), = park.sql("SELECT number FROM parks WHERE id = %s", PARK)
    yesterday = int((datetime.now(UTC) - timedelta(days=1)).timestamp())
    old = native.issue(native.SigningKey(key_id, bytes(seed)), serial=kept.serial, product_id=1, park_id=number,
                       valid_from=yesterday - 86400, valid_until=yesterday)
    assert (await gate.validate(rid(), code=old)).reason == "EXPIRED"

    start, end = local_minute(60) // 10 * 10, local_minute(120) // 10 * 10
    if start != end:  # a window that opens in an hour: not now
        await park.product("night", entries_total=1, window_start_minute=start, window_end_minute=end)
        night, = await park.sell("night")
        assert (await gate.validate(rid(), code=night.code)).reason == "OUTSIDE_TIME_WINDOW"
    await park.product("now", entries_total=1, window_start_minute=local_minute(-30), window_end_minute=local_minute(30))
    now_ticket, = await park.sell("now")
    assert (await gate.validate(rid(), code=now_ticket.code)).allow


async def test_count_cards_daily_limits_and_reentry(park: Park) -> None:
    entry = await park.gate("g-in")
    exit_ = await park.gate("g-out", direction="out")
    await park.product("card3", catalog_pb2.COUNT_CARD, entries_total=3, card_bound=True)
    await park.sell("card3", cards=["04AABBCCDD0011"])
    decisions = [await entry.validate(rid(), card_uid="04:aa:bb:cc:dd:00:11") for _ in range(4)]
    assert [d.reason for d in decisions] == ["OK", "OK", "OK", "NO_ENTRIES_LEFT"]
    assert [d.entries_left for d in decisions[:3]] == [2, 1, 0]

    await park.product("twice", entries_per_day=2)
    twice, = await park.sell("twice")
    assert [(await entry.validate(rid(), code=twice.code)).reason for _ in range(3)] == [
        "OK", "OK", "DAILY_LIMIT_REACHED"]

    await park.product("come-back", entries_per_day=1, reentry_allowed=True)
    back, = await park.sell("come-back")
    assert (await entry.validate(rid(), code=back.code)).allow
    assert (await entry.validate(rid(), code=back.code)).reason == "DAILY_LIMIT_REACHED"  # still inside
    assert (await exit_.validate(rid(), code=back.code)).allow
    assert (await entry.validate(rid(), code=back.code)).allow  # re-entry after an exit: not counted
    assert park.sql("SELECT entries_used FROM tickets WHERE id = %s", back.id) == [(1,)]

    once, = await park.sell("single")
    assert (await entry.validate(rid(), code=once.code)).allow
    assert (await exit_.validate(rid(), code=once.code)).allow
    assert (await entry.validate(rid(), code=once.code)).reason == "ALREADY_USED"  # a used single-use ticket, whatever happened since


async def test_an_unconfirmed_passage_gives_the_entry_back(park: Park) -> None:
    gate = await park.gate("g-turnstile", confirms_passage=True)
    ticket, = await park.sell("single")
    (inside_before,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)
    first = await gate.validate("turn-1", code=ticket.code)
    assert first.allow
    gate.passage("turn-1", passed=False)  # the person turned back: the turnstile never turned
    for _ in range(50):
        if park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(0,)]:
            break
        await asyncio.sleep(0.1)
    assert park.sql("SELECT entries_used, inside FROM tickets WHERE id = %s", ticket.id) == [(0, False)]
    assert park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK) == [(inside_before,)]
    assert park.sql("SELECT reason FROM validations WHERE request_id = 'turn-1'") == [("PASSAGE_NOT_CONFIRMED",)]
    again = await gate.validate("turn-2", code=ticket.code)
    assert again.allow
    gate.passage("turn-2", passed=True)
    for _ in range(50):
        if park.sql("SELECT passed_at IS NOT NULL FROM validations WHERE request_id = 'turn-2'") == [(True,)]:
            break
        await asyncio.sleep(0.1)
    assert (await gate.validate("turn-3", code=ticket.code)).reason == "ALREADY_USED"


async def test_admissions_never_reported_give_their_entry_back_after_twice_the_passage_timeout(park: Park) -> None:
    """The gate died between the admission and the passage report: the server's sweeper annuls it, not sooner."""
    md = park.admin.metadata
    await park.admin.admin.SetParameter(admin_pb2.SetParameterRequest(key="gate.passage_timeout_seconds", value="1"),
                                        metadata=md)
    try:
        gate = await park.gate("g-silent", confirms_passage=True)
        ticket, = await park.sell("single")
        (inside_before,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)
        assert (await gate.validate("silent-1", code=ticket.code)).allow
        assert park.sql("SELECT entries_used, inside FROM tickets WHERE id = %s", ticket.id) == [(1, True)]
        await gate.close()  # it never reports the passage
        await park.until_sql("SELECT entries_used, inside FROM tickets WHERE id = %s", ticket.id,
                             expect=[(0, False)], timeout=60)
        assert park.sql("SELECT reason, extract(epoch FROM annulled_at - at) >= 2 FROM validations "
                        "WHERE request_id = 'silent-1'") == [("PASSAGE_NOT_CONFIRMED", True)]  # 2 x 1 s at least
        assert park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK) == [(inside_before,)]
    finally:
        await park.admin.admin.SetParameter(admin_pb2.SetParameterRequest(key="gate.passage_timeout_seconds",
                                                                          value="10"), metadata=md)


async def _next_command(link: GateLink, kind: str, timeout: float = 10.0) -> Command:
    async with asyncio.timeout(timeout):
        while True:
            command = await link.commands.get()
            if command.kind == kind:
                return command


async def _next_entry_command(link: GateLink, timeout: float = 10.0) -> str:
    """The next PAUSE_ENTRY or RESUME_ENTRY the gate hears (other commands are passed over)."""
    async with asyncio.timeout(timeout):
        while True:
            command = await link.commands.get()
            if command.kind in ("PAUSE_ENTRY", "RESUME_ENTRY"):
                return command.kind


async def test_capacity_pauses_entry_at_the_cap_and_resumes_only_below_cap_minus_margin(park: Park) -> None:
    """Hysteresis (S27) with a margin of 3: paused at the cap, still paused 1 and 2 below it, resumed at 3 below."""
    entry = await park.gate("g-cap-in")
    other = await park.gate("g-cap-in-2", server=1)  # on the other server: hears it through the database
    exit_ = await park.gate("g-cap-out", direction="out")
    (inside,), = park.sql("SELECT inside FROM park_state WHERE park_id = %s", PARK)
    inside = int(inside)
    occupancy = await park.control().SetCapacity(gate_pb2.SetCapacityRequest(
        park_id=PARK, capacity=inside + 4, resume_margin=3), metadata=park.admin.metadata)
    assert not occupancy.entry_paused
    tickets = await park.sell("single", 7)
    for t in tickets[:4]:
        assert (await entry.validate(rid(), code=t.code)).allow
    assert (await entry.validate(rid(), code=tickets[4].code)).reason == "PARK_FULL"  # at the cap
    assert await _next_entry_command(entry) == "PAUSE_ENTRY"
    assert await _next_entry_command(other) == "PAUSE_ENTRY"

    for n, leaving in enumerate(tickets[:2], start=1):  # 1, then 2 below the cap: inside the margin
        assert (await exit_.validate(rid(), code=leaving.code)).allow
        state = await park.control().GetOccupancy(gate_pb2.GetOccupancyRequest(park_id=PARK),
                                                  metadata=park.admin.metadata)
        assert (state.inside, state.entry_paused) == (inside + 4 - n, True)
        # one person would fit under the cap, but entry stays paused until cap - margin
        assert (await entry.validate(rid(), code=tickets[4].code)).reason == "PARK_FULL"
        assert (await other.validate(rid(), code=tickets[4].code)).reason == "PARK_FULL"

    assert (await exit_.validate(rid(), code=tickets[2].code)).allow  # at cap - margin: entry resumes
    # the first entry command since the pause is this resume: none came while inside the margin
    assert await _next_entry_command(entry) == "RESUME_ENTRY"
    assert await _next_entry_command(other) == "RESUME_ENTRY"
    for t in tickets[4:6]:
        assert (await other.validate(rid(), code=t.code)).allow
    state = await park.control().GetOccupancy(gate_pb2.GetOccupancyRequest(park_id=PARK), metadata=park.admin.metadata)
    assert (state.inside, state.entry_paused) == (inside + 3, False)  # room for one more, entry open
    assert (await entry.validate(rid(), code=tickets[6].code)).allow  # the cap again
    assert await _next_entry_command(entry) == "PAUSE_ENTRY"
    await park.control().SetCapacity(gate_pb2.SetCapacityRequest(park_id=PARK, capacity=0),
                                     metadata=park.admin.metadata)
    assert await _next_entry_command(entry) == "RESUME_ENTRY"


async def test_an_emergency_opens_every_gate_on_every_server_until_released(park: Park) -> None:
    gates = [await park.gate(f"g-fire-{n}", server=n % 2) for n in range(4)]

    async def obey(link: GateLink, kind: str) -> None:
        command = await _next_command(link, kind)
        link.acknowledge(command.command_id, True, "relay open and held")

    control = park.control()
    opening = asyncio.gather(*(obey(g, "EMERGENCY_OPEN_CMD") for g in gates))
    reply = await control.EmergencyOpen(gate_pb2.EmergencyRequest(park_id=PARK, note="drill"),
                                        metadata=park.admin.metadata)
    await opening
    names = {f"g-fire-{n}" for n in range(4)}
    assert names <= set(reply.acknowledged_by) and reply.gates_notified >= 4
    late = await park.gate("g-fire-late")  # a gate connecting during the emergency learns it in its welcome
    assert late.welcome is not None and late.welcome.emergency_open
    releasing = asyncio.gather(*(obey(g, "EMERGENCY_RELEASE_CMD") for g in [*gates, late]))
    reply = await control.EmergencyRelease(gate_pb2.EmergencyRequest(park_id=PARK), metadata=park.admin.metadata)
    await releasing
    assert names | {"g-fire-late"} <= set(reply.acknowledged_by)
    audit = await park.admin.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(method_contains="Emergency"),
                                                metadata=park.admin.metadata)
    assert {r.method.rsplit("/", 1)[-1] for r in audit.records} >= {"EmergencyOpen", "EmergencyRelease"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await control.EmergencyOpen(gate_pb2.EmergencyRequest(park_id=PARK), metadata=park.seller.metadata)
    assert reason_of(err.value) == "PERMISSION_DENIED"


async def test_a_state_change_no_notify_announces_reaches_the_gates_by_the_poll(park: Park) -> None:
    """The NOTIFY is lost (here: never sent, the park state changed by plain SQL): every server's
    state poll (gates.state_poll_seconds) still tells its gates, on both servers, both ways."""
    gates = [await park.gate(f"g-poll-{n}", server=n) for n in range(2)]
    quiet = """UPDATE park_state SET emergency = %s, emergency_since = CASE WHEN %s THEN now() END,
                   emergency_changed_at = now(), changed_at = now() WHERE park_id = %s"""
    park.sql(quiet, True, True, PARK)
    try:
        for link in gates:
            await _next_command(link, "EMERGENCY_OPEN_CMD", timeout=60)
    finally:
        park.sql(quiet, False, False, PARK)
    for link in gates:
        await _next_command(link, "EMERGENCY_RELEASE_CMD", timeout=60)


async def test_an_emergency_names_the_gate_that_never_acknowledged(park: Park) -> None:
    """A gate that hears the command but never confirms the relay is held open is not counted as open."""
    obedient, deaf = await park.gate("g-ack-yes"), await park.gate("g-ack-never", server=1)

    async def obey(kind: str) -> None:
        command = await _next_command(obedient, kind)
        obedient.acknowledge(command.command_id, True, "relay open and held")

    control, md = park.control(), park.admin.metadata
    try:
        opening = asyncio.ensure_future(obey("EMERGENCY_OPEN_CMD"))
        reply = await control.EmergencyOpen(gate_pb2.EmergencyRequest(park_id=PARK, note="drill"), metadata=md)
        await opening
        await _next_command(deaf, "EMERGENCY_OPEN_CMD")  # it was told, on the other server
        assert "g-ack-yes" in reply.acknowledged_by and "g-ack-never" not in reply.acknowledged_by
        assert reply.gates_notified > len(reply.acknowledged_by)  # the answer shows a gate is unaccounted for
    finally:
        releasing = asyncio.ensure_future(obey("EMERGENCY_RELEASE_CMD"))
        await control.EmergencyRelease(gate_pb2.EmergencyRequest(park_id=PARK), metadata=md)
        await releasing
        await obedient.close()
        await deaf.close()


async def test_fifty_gates_on_two_servers_admit_one_single_use_ticket_exactly_once(park: Park) -> None:
    ticket, = await park.sell("single")
    gates = await asyncio.gather(*(park.gate(f"g-rush-{n:02d}", server=n % 2) for n in range(50)))

    async def present(link: GateLink, n: int) -> list[bool]:
        return [r.allow for r in await link.validate_many([(f"rush-{n}-{k}", ticket.code) for k in range(20)],
                                                          timeout=60)]

    results = await asyncio.gather(*(present(g, n) for n, g in enumerate(gates)))
    allowed = sum(sum(r) for r in results)
    assert sum(len(r) for r in results) == 1000
    assert allowed == 1
    assert park.sql("SELECT count(*) FROM validations WHERE ticket_id = %s AND allow", ticket.id) == [(1,)]
    assert park.sql("SELECT entries_used FROM tickets WHERE id = %s", ticket.id) == [(1,)]


async def test_the_admin_command_opens_and_releases_the_park(park: Park) -> None:
    gate = await park.gate("g-cli")

    async def obey(kind: str) -> None:
        command = await _next_command(gate, kind)
        gate.acknowledge(command.command_id, True, "held open")

    async def admin(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PARKGATE_TOKEN": park.admin.token}
        return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "parkgate.common.cli", "admin", "--server",
                                                        park.servers[0].address, "--json", *args],
                                       capture_output=True, text=True, env=env, timeout=60)

    obeyed = asyncio.ensure_future(obey("EMERGENCY_OPEN_CMD"))
    opened = await admin("emergency", "open", "--park", PARK, "--note", "smoke in hall 2")
    await obeyed
    assert opened.returncode == 0, opened.stderr
    assert "g-cli" in orjson.loads(opened.stdout)["acknowledged_by"]
    occupancy = orjson.loads((await admin("occupancy", "--park", PARK)).stdout)
    assert occupancy["emergency_open"] is True
    obeyed = asyncio.ensure_future(obey("EMERGENCY_RELEASE_CMD"))
    released = await admin("emergency", "release", "--park", PARK)
    await obeyed
    assert released.returncode == 0 and "g-cli" in orjson.loads(released.stdout)["acknowledged_by"]
    unknown = await admin("emergency", "open", "--park", "atlantis")
    assert unknown.returncode == 2 and "UNKNOWN_PARK" in unknown.stderr


async def test_a_gate_that_half_closes_its_stream_still_hears_every_answer(park: Park) -> None:
    """The gate sends its validations and closes its side at once: the server answers each before it ends."""
    secret = await park.register_gate("g-halfclose")
    tickets = await park.sell("single", quantity=5)
    messages = [gate_pb2.GateMessage(hello=gate_pb2.Hello(device_id="g-halfclose", device_secret=secret,
                                                          park_id=PARK))]
    messages += [gate_pb2.GateMessage(validation=gate_pb2.ValidationRequest(request_id=f"hc{i}", code=t.code))
                 for i, t in enumerate(tickets)]
    channel = park.server.channel()
    call = gate_pb2_grpc.GateStub(channel).Connect(iter(messages), timeout=30)  # the iterator ends: half-close
    replies = [m async for m in call]
    results = {m.result.request_id: m.result.allow for m in replies if m.WhichOneof("body") == "result"}
    assert results == {f"hc{i}": True for i in range(5)}
