"""The permission matrix, generated from the contract: every RPC x every built-in role x no token.

Expected outcomes come from the ``(access)`` option of each RPC and the role
catalogue (``parkgate.server.domain.permissions``): a role holding the RPC's
permission (or ``self``) is never refused PERMISSION_DENIED, a role without it
always is, and a call without a token is refused UNAUTHENTICATED unless the RPC
is public. Device RPCs (gate streams) authenticate the device inside the
stream and are covered by the gate tests.
"""

from __future__ import annotations

import grpc
from google.protobuf.message_factory import GetMessageClass

from parkgate.server.domain.permissions import BUILTIN_ROLES, SELF
from parkgate.server.rpc.access import access_rules
from parkgate.v1 import admin_pb2
from tests.fixtures.server import Client, RunningServer, reason_of

from .test_hostile_input import _call, _method

PASSWORD = "matrix password 1"


async def test_every_rpc_for_every_builtin_role_and_no_token(parkgate_server: RunningServer) -> None:
    admin = await parkgate_server.admin()
    listed = {r.name: set(r.permissions) for r in
              (await admin.admin.ListRoles(admin_pb2.ListRolesRequest(), metadata=admin.metadata)).roles}
    for template in BUILTIN_ROLES:  # the server enforces the catalogue as shipped
        assert listed[template.name] == set(template.permissions), template.name
    clients: dict[str, Client] = {}
    for template in BUILTIN_ROLES:
        username = f"matrix-{template.name}"
        await admin.admin.CreateUser(admin_pb2.CreateUserRequest(username=username, password=PASSWORD,
                                                                 roles=[template.name]), metadata=admin.metadata)
        clients[template.name] = await parkgate_server.login(username, PASSWORD)
    anonymous = Client(parkgate_server.channel(), "")
    wrong: list[str] = []
    checked = 0
    for name, rule in sorted(access_rules().items()):
        if rule.device:
            continue
        method = _method(name)
        request = GetMessageClass(method.input_type)()
        error = await _call(anonymous.channel, name, method, request, ())
        code = error.code() if error else grpc.StatusCode.OK
        if rule.public:
            if code == grpc.StatusCode.PERMISSION_DENIED:
                wrong.append(f"{name} without a token: {code.name} (public)")
        elif code != grpc.StatusCode.UNAUTHENTICATED:
            wrong.append(f"{name} without a token: {code.name}, expected UNAUTHENTICATED")
        for template in BUILTIN_ROLES:
            client = clients[template.name]
            error = await _call(client.channel, name, method, request, client.metadata)
            denied = error is not None and reason_of(error) == "PERMISSION_DENIED"
            allowed = rule.public or rule.permission == SELF or rule.permission in template.permissions
            if denied == allowed or (error is not None and error.code() == grpc.StatusCode.INTERNAL):
                wrong.append(f"{name} as {template.name}: {error.code().name if error else 'OK'} "
                             f"{reason_of(error) if error else ''}, expected {'allowed' if allowed else 'denied'}")
            checked += 1
            if name.endswith("/Logout") and error is None:  # that session ended: open another
                clients[template.name] = await parkgate_server.login(f"matrix-{template.name}", PASSWORD)
    assert not wrong, "\n".join(wrong)
    assert checked >= 5 * 60
