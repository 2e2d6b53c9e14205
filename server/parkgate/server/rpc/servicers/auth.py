"""Auth service: log-in, log-out, who am I, change own password; a device's enrolment for its certificate."""

from __future__ import annotations

import grpc

from parkgate.server.domain.errors import InvalidArgument
from parkgate.server.services.enrolment import DeviceEnrolment
from parkgate.server.services.operators import OperatorService
from parkgate.v1 import auth_pb2, auth_pb2_grpc

from .. import call
from ..convert import ts


class AuthServicer(auth_pb2_grpc.AuthServicer):
    def __init__(self, operators: OperatorService, enrolment: DeviceEnrolment) -> None:
        self.operators = operators
        self.enrolment = enrolment

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext) -> auth_pb2.LoginResponse:
        if not request.username or not request.password:
            raise InvalidArgument("user name and password are required")
        result = await self.operators.login(request.username, request.password, request.device_id, context.peer(),
                                            request.device_secret)
        call.current_call.get().principal = result.principal
        return auth_pb2.LoginResponse(
            token=result.token, expires_at=ts(result.expires_at), user_id=result.principal.user_id,
            roles=result.principal.roles, permissions=sorted(result.principal.permissions),
            must_change_password=result.must_change_password,
        )

    async def Logout(self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext) -> auth_pb2.LogoutResponse:
        await self.operators.logout(call.principal())
        return auth_pb2.LogoutResponse()

    async def WhoAmI(self, request: auth_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext) -> auth_pb2.WhoAmIResponse:
        who = call.principal()
        return auth_pb2.WhoAmIResponse(
            user_id=who.user_id, username=who.username, roles=who.roles, permissions=sorted(who.permissions),
            device_id=who.device_id or "", session_expires_at=ts(who.expires_at),
        )

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        await self.operators.change_password(call.principal(), request.old_password, request.new_password)
        return auth_pb2.ChangePasswordResponse()

    async def EnrollDevice(
        self, request: auth_pb2.EnrollDeviceRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.EnrollDeviceResponse:
        call.current_call.get().device_id = request.device_id  # the operation log names the device
        issued = await self.enrolment.enroll(request.device_id, request.device_secret, request.csr)
        assert self.enrolment.ca is not None
        return auth_pb2.EnrollDeviceResponse(
            certificate_pem=issued.pem.decode(), ca_pem=self.enrolment.ca.cert_pem.decode(),
            not_after=ts(issued.not_after), serial=f"{issued.serial:x}",
        )
