"""A leaked ticket code is revoked and the ticket reissued: the old code is refused everywhere, the new one admits.

``parkgate admin ticket-reissue SERIAL`` (the console command) voids the
ticket and writes it again under a new serial and code (same order, rights,
uses). Online the old code is refused at once; every connected gate gets the
revoked serial in UPDATE_KEYS, and the gate agent's own offline decision
refuses it from then on, also after a restart from its disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from parkgate import native
from parkgate.clients.gate.agent import GateAgent
from parkgate.clients.gate.offline import GateDisk, LocalDecision
from parkgate.common.reason import Reason
from parkgate.v1 import sales_pb2
from tests.fixtures.park import rid

from .conftest import Rig, Site, open_link, run_admin, until

OPENED = r"^OPEN \d+: one passage granted"


def _offline(agent: GateAgent, code: str) -> Reason | str:
    """The gate agent's own offline decision for an entry now: "admitted", or the reason it refuses."""
    assert agent.keys is not None
    decision = agent.decider.decide(code, "in", time.time(), agent.keys)
    if isinstance(decision, LocalDecision):
        return "admitted" if decision.ok else decision.verdict.reason
    return decision


async def test_reissued_ticket_old_code_refused_online_and_offline(site: Site, make_rig: Callable[..., Rig],
                                                                    tmp_path: Path) -> None:
    state = tmp_path / "state"
    rig = await make_rig("ag-reissue", start=False)
    rig.config_path.write_text(rig.config_path.read_text().replace("[gate]\n", f'[gate]\nstate_dir = "{state}"\n', 1))
    agent = await rig.start()
    assert agent is not None and agent.keys is not None
    link = await open_link(site, "reissue-link")
    try:
        leaked, other = await site.sell("single", 2)
        old_serial = native.decode(leaked.code).serial
        # Before: the gate agent's offline decision would admit the leaked code.
        assert _offline(agent, leaked.code) == "admitted"

        done = await run_admin(site, "ticket-reissue", str(old_serial), "--note", "code posted online")
        assert done.returncode == 0, done.stderr
        reply = orjson.loads(done.stdout)
        new_code, new_serial = reply["code"], int(reply["serial"])
        assert int(reply["revoked_serial"]) == old_serial and new_serial != old_serial
        payload, old_payload = native.decode(new_code), native.decode(leaked.code)
        assert payload.serial == new_serial
        assert payload._replace(serial=0, key_id=0) == old_payload._replace(serial=0, key_id=0)  # same rights

        command = await asyncio.wait_for(link.commands.get(), 15)
        assert command.kind == "UPDATE_KEYS" and old_serial in command.revoked_serials
        # Online, through a gate stream: refused at once.
        assert (await link.validate("r-old", code=leaked.code)).reason == "VOIDED"
        # The gate agent heard of it: its offline decision refuses the old code, and keeps the rest.
        await until("the agent holds the revoked serial",
                     lambda: old_serial in agent.keys.revoked_serials)  # type: ignore[union-attr]
        assert _offline(agent, leaked.code) is Reason.CODE_REVOKED
        assert _offline(agent, other.code) == "admitted"
        assert _offline(agent, new_code) == "admitted"
        # ...also from its disk, as after a restart without the server.
        cached = GateDisk(state).load_keys()
        assert cached is not None and old_serial in cached.revoked_serials

        # The new code admits, through the agent and the real server.
        mark = rig.board.mark()
        rig.scan(new_code)
        await rig.board.wait_for(OPENED, mark)
        # By the code itself (as the leak shows it): the reissued ticket can be reissued again.
        by_code = await run_admin(site, "ticket-reissue", new_code)
        assert by_code.returncode == 0, by_code.stderr
        assert int(orjson.loads(by_code.stdout)["revoked_serial"]) == new_serial
        # A second reissue of the old serial is refused: it is voided.
        again = await run_admin(site, "ticket-reissue", str(old_serial))
        assert again.returncode != 0 and "VOIDED" in again.stderr
        # A new gate hears of the revoked serial in its welcome.
        late = await open_link(site, "reissue-late")
        try:
            assert late.welcome is not None and old_serial in late.welcome.revoked_serials
        finally:
            await late.close()
    finally:
        await link.close()


async def test_a_refunded_ticket_is_refused_by_a_gate_that_goes_offline_after_the_refund(
        site: Site, make_rig: Callable[..., Rig]) -> None:
    """Issue 12, point 5: a refund reaches the gates as the revoked codes do, so the gate's own offline decision
    refuses the ticket once the server is out of reach (pretix's offline mode admits it: their issue #2467)."""
    rig = await make_rig("ag-refund")
    agent = rig.agent
    assert agent is not None and agent.keys is not None
    link = await open_link(site, "refund-link")
    try:
        refunded, kept = await site.sell("single", 2)
        serial = native.decode(refunded.code).serial
        assert _offline(agent, refunded.code) == "admitted"
        await site.admin.sales.PutRefundReason(sales_pb2.RefundReason(id="offline-gate", label="Changed plans",
                                                                      refund_percent=100), metadata=site.admin.metadata)
        await site.admin.sales.Refund(sales_pb2.RefundRequest(request_id=rid(), ticket_ids=[refunded.id],
                                                              reason_id="offline-gate"), metadata=site.admin.metadata)
        command = await asyncio.wait_for(link.commands.get(), 15)
        assert command.kind == "UPDATE_KEYS" and serial in command.revoked_serials
        await until("the agent holds the refunded serial",
                     lambda: serial in agent.keys.revoked_serials)  # type: ignore[union-attr]
        assert _offline(agent, refunded.code) is Reason.CODE_REVOKED
        assert _offline(agent, kept.code) == "admitted"
        late = await open_link(site, "refund-late")  # a gate connecting later hears it in its welcome
        try:
            assert late.welcome is not None and serial in late.welcome.revoked_serials
        finally:
            await late.close()
    finally:
        await link.close()
