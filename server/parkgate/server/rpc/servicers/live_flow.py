"""Reports.LiveFlow (S26): a server stream of a park's flow snapshots, and their conversion to the contract.

The report RPCs are not this module's: the Reports servicer that answers them
inherits :class:`LiveFlowServicer` (or its ``LiveFlow`` method), since gRPC
takes one servicer per service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parkgate.common.reason import Reason
from parkgate.server.services.flow import LiveFlowService, Snapshot
from parkgate.v1 import reports_pb2, reports_pb2_grpc

from ..call import principal
from ..convert import money, ts
from ..convert_catalogue import PERSONAL, held_check


def _reason_number(name: str) -> int:
    try:
        return Reason(name).number
    except ValueError:  # a reason a newer server wrote that this one does not know
        return 0


def flow_snapshot(snapshot: Snapshot, *, personal: bool = False) -> reports_pb2.FlowSnapshot:
    """The snapshot in the contract; the held checks' names and photos only when ``personal`` (members.personal)."""
    v = snapshot.view
    park = v.park
    return reports_pb2.FlowSnapshot(
        at=ts(v.at), park_id=park.park_id, inside=park.inside, capacity=park.capacity,
        entry_paused=park.paused, emergency_open=park.emergency, emergency_since=ts(park.emergency_since),
        resume_margin=park.capacity_resume_margin, entries=v.entries, exits=v.exits,
        minutes=[reports_pb2.FlowMinute(minute=ts(m.minute), entries=m.entries, exits=m.exits, refusals=m.refusals,
                                        inside=m.inside) for m in v.minutes],
        gates=[reports_pb2.GateTile(device_id=g.device_id, connected=g.connected, state=g.state,
                                    server_id=g.server_id, last_heartbeat=ts(g.last_heartbeat), entries=g.entries,
                                    exits=g.exits, refusals=g.refusals) for g in v.gates],
        sites=[reports_pb2.SiteStatus(device_id=s.device_id, site=s.site, online=s.online,
                                      last_contact=ts(s.last_contact)) for s in v.sites],
        refusals=[reports_pb2.ReasonCount(reason=_reason_number(r), count=n) for r, n in v.refusals],
        alerts=[reports_pb2.FlowAlert(at=ts(a.at), kind=a.kind, device_id=a.device_id,
                                      reason=_reason_number(a.reason), request_id=a.request_id, detail=a.detail,
                                      server_id=a.server_id) for a in snapshot.alerts],
        entries_by_gate=[reports_pb2.ReportRow(key=device, count=n) for device, n in v.by_gate],
        sales_by_window=[reports_pb2.ReportRow(key=s.device_id, count=s.orders, amount=money(s.amount, s.currency))
                         for s in snapshot.sales],
        held_checks=[held_check(h, personal=personal) for h in snapshot.held],
    )


class LiveFlowServicer(reports_pb2_grpc.ReportsServicer):
    def __init__(self, live_flow: LiveFlowService) -> None:
        self.live_flow = live_flow

    async def LiveFlow(self, request: reports_pb2.LiveFlowRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[reports_pb2.FlowSnapshot]:
        personal = principal().may(PERSONAL)  # held checks: who is held only for those who may see it
        async for snapshot in self.live_flow.stream(request.park_id, request.interval_seconds, request.minutes):
            yield flow_snapshot(snapshot, personal=personal)
