"""Admin service: operators, roles, devices, parameters, dictionary, audit log, sessions."""

from __future__ import annotations

import grpc

from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.services.admin import AdminService
from parkgate.server.services.keys import KeyService
from parkgate.server.services.operators import OperatorService
from parkgate.server.store.keys import KeyRow
from parkgate.v1 import admin_pb2, admin_pb2_grpc

from .. import call, convert

Ctx = grpc.aio.ServicerContext


def _key(row: KeyRow) -> admin_pb2.SigningKeyInfo:
    return admin_pb2.SigningKeyInfo(key_id=row.key_id, public_key=bytes(row.public_key), state=row.state,
                                    created_at=convert.ts(row.created_at))


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, operators: OperatorService, admin: AdminService, keys: KeyService) -> None:
        self.operators = operators
        self.admin = admin
        self.keys = keys

    # --- users ------------------------------------------------------------------
    async def ListUsers(self, request: admin_pb2.ListUsersRequest, context: Ctx) -> admin_pb2.ListUsersResponse:
        rows = await self.operators.list_users(request.include_disabled)
        return admin_pb2.ListUsersResponse(users=[convert.user(r) for r in rows])

    async def CreateUser(self, request: admin_pb2.CreateUserRequest, context: Ctx) -> admin_pb2.User:
        if not request.username:
            raise InvalidArgument("a user needs a user name")
        row = await self.operators.create_user(
            request.username, request.display_name, request.password, list(request.roles)
        )
        return convert.user(row)

    async def UpdateUser(self, request: admin_pb2.UpdateUserRequest, context: Ctx) -> admin_pb2.User:
        row = await self.operators.update_user(
            request.username,
            display_name=request.display_name if request.HasField("display_name") else None,
            roles=list(request.roles) if request.set_roles else None,
            disabled=request.disabled if request.HasField("disabled") else None,
        )
        return convert.user(row)

    async def ResetPassword(self, request: admin_pb2.ResetPasswordRequest, context: Ctx) -> admin_pb2.ResetPasswordResponse:
        await self.operators.reset_password(request.username, request.new_password)
        return admin_pb2.ResetPasswordResponse()

    # --- roles ------------------------------------------------------------------
    async def ListPermissions(self, request: admin_pb2.ListPermissionsRequest, context: Ctx) -> admin_pb2.ListPermissionsResponse:
        rows = await self.operators.list_permissions()
        return admin_pb2.ListPermissionsResponse(permissions=[convert.permission(r) for r in rows])

    async def ListRoles(self, request: admin_pb2.ListRolesRequest, context: Ctx) -> admin_pb2.ListRolesResponse:
        return admin_pb2.ListRolesResponse(roles=[convert.role(r) for r in await self.operators.list_roles()])

    async def PutRole(self, request: admin_pb2.PutRoleRequest, context: Ctx) -> admin_pb2.Role:
        role = request.role
        if not role.name:
            raise InvalidArgument("a role needs a name")
        row = await self.operators.put_role(role.name, role.description, list(role.permissions))
        return convert.role(row)

    async def DeleteRole(self, request: admin_pb2.DeleteRoleRequest, context: Ctx) -> admin_pb2.DeleteRoleResponse:
        await self.operators.delete_role(request.name)
        return admin_pb2.DeleteRoleResponse()

    # --- devices ------------------------------------------------------------------
    async def ListDevices(self, request: admin_pb2.ListDevicesRequest, context: Ctx) -> admin_pb2.ListDevicesResponse:
        rows = await self.admin.list_devices(convert.device_kind_name(request.kind), request.park_id or None)
        return admin_pb2.ListDevicesResponse(devices=[convert.device(r) for r in rows])

    async def RegisterDevice(self, request: admin_pb2.RegisterDeviceRequest, context: Ctx) -> admin_pb2.RegisterDeviceResponse:
        row, secret = await self.admin.register_device(convert.device_spec(request.device))
        return admin_pb2.RegisterDeviceResponse(device=convert.device(row), secret=secret)

    async def UpdateDevice(self, request: admin_pb2.UpdateDeviceRequest, context: Ctx) -> admin_pb2.Device:
        row, _secret = await self.admin.update_device(
            request.id,
            disabled=request.disabled if request.HasField("disabled") else None,
            description=request.description if request.HasField("description") else None,
            language=request.language if request.HasField("language") else None,
            rotate_secret=request.rotate_secret,
        )
        return convert.device(row)

    # --- parameters and dictionary -------------------------------------------------
    async def ListParameters(self, request: admin_pb2.ListParametersRequest, context: Ctx) -> admin_pb2.ListParametersResponse:
        rows = await self.admin.list_parameters(request.prefix)
        return admin_pb2.ListParametersResponse(parameters=[convert.parameter(r) for r in rows])

    async def SetParameter(self, request: admin_pb2.SetParameterRequest, context: Ctx) -> admin_pb2.Parameter:
        if not request.key:
            raise InvalidArgument("a parameter needs a key")
        row = await self.admin.set_parameter(request.key, request.value, call.principal().username)
        return convert.parameter(row)

    async def ListDictionary(self, request: admin_pb2.ListDictionaryRequest, context: Ctx) -> admin_pb2.ListDictionaryResponse:
        rows = await self.admin.list_dictionary(request.language, request.prefix)
        return admin_pb2.ListDictionaryResponse(entries=[convert.dictionary_entry(r) for r in rows])

    async def PutDictionaryEntry(self, request: admin_pb2.PutDictionaryEntryRequest, context: Ctx) -> admin_pb2.DictionaryEntry:
        entry = request.entry
        await self.admin.put_dictionary_entry(entry.key, entry.language, entry.text)
        return entry

    # --- audit and sessions --------------------------------------------------------
    async def ListAuditLog(self, request: admin_pb2.ListAuditLogRequest, context: Ctx) -> admin_pb2.ListAuditLogResponse:
        limit = request.page.limit or 100
        if not 0 < limit <= 1000:
            raise InvalidArgument("page.limit must be between 1 and 1000")
        rows = await self.admin.audit_log(
            start=convert.from_ts(request.range.start, request.range.HasField("start")),
            end=convert.from_ts(request.range.end, request.range.HasField("end")),
            username=request.username, method_contains=request.method_contains,
            after=request.page.after, limit=limit,
        )
        next_after = str(rows[-1].id) if len(rows) == limit else ""
        return admin_pb2.ListAuditLogResponse(records=[convert.audit_record(r) for r in rows], next_after=next_after)

    async def ListSessions(self, request: admin_pb2.ListSessionsRequest, context: Ctx) -> admin_pb2.ListSessionsResponse:
        rows = await self.operators.open_sessions()
        return admin_pb2.ListSessionsResponse(sessions=[convert.session(r) for r in rows])

    async def EndSession(self, request: admin_pb2.EndSessionRequest, context: Ctx) -> admin_pb2.EndSessionResponse:
        await self.operators.end_session(request.session_id)
        return admin_pb2.EndSessionResponse()

    # --- ticket signing keys ----------------------------------------------------------
    async def ListSigningKeys(self, request: admin_pb2.ListSigningKeysRequest,
                              context: Ctx) -> admin_pb2.ListSigningKeysResponse:
        return admin_pb2.ListSigningKeysResponse(keys=[_key(k) for k in await self.keys.list_keys()])

    async def RotateSigningKey(self, request: admin_pb2.RotateSigningKeyRequest,
                               context: Ctx) -> admin_pb2.SigningKeyInfo:
        return _key(await self.keys.rotate())

    async def RetireSigningKey(self, request: admin_pb2.SigningKeyRequest, context: Ctx) -> admin_pb2.SigningKeyInfo:
        return _key(await self.keys.retire(request.key_id))

    async def RevokeSigningKey(self, request: admin_pb2.SigningKeyRequest, context: Ctx) -> admin_pb2.SigningKeyInfo:
        return _key(await self.keys.revoke(request.key_id))

    async def ReissueTicket(self, request: admin_pb2.ReissueTicketRequest,
                            context: Ctx) -> admin_pb2.ReissueTicketResponse:
        done = await self.keys.reissue_ticket(serial=request.serial, code=request.ticket_code, note=request.note)
        return admin_pb2.ReissueTicketResponse(revoked_serial=done.revoked_serial, serial=done.serial,
                                               code=done.code, ticket_id=done.ticket_id)

    # --- the operation log's hash chains ------------------------------------------------
    async def VerifyAuditLog(self, request: admin_pb2.VerifyAuditLogRequest,
                             context: Ctx) -> admin_pb2.VerifyAuditLogResponse:
        records, chains, problems = await self.admin.verify_audit_log(
            convert.from_ts(request.range.start, request.range.HasField("start")),
            convert.from_ts(request.range.end, request.range.HasField("end")),
        )
        return admin_pb2.VerifyAuditLogResponse(records_checked=records, chains_checked=chains, problems=[
            admin_pb2.AuditChainProblem(chain=p.chain, record_id=p.record_id, problem=p.problem) for p in problems])
