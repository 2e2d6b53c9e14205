"""Log-in, sessions, passwords, users and roles (S3-S5)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from parkgate.server.config import AuthSettings
from parkgate.server.domain import device_certs, device_secrets, passwords
from parkgate.server.domain.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    NotFound,
    Reason,
    Unauthenticated,
)
from parkgate.server.domain.operators import LoginPolicy, Principal, check_can_log_in, lock_after_failure
from parkgate.server.domain.permissions import ADMIN_ROLE, PERMISSIONS
from parkgate.server.domain.throttle import AddressThrottle, source_address
from parkgate.server.store import Database
from parkgate.server.store import devices as device_store
from parkgate.server.store import operators as store
from parkgate.server.store.database import Connection
from parkgate.server.store.rows.admin import DeviceWithSecret
from parkgate.server.store.rows.operators import Permission, Role, Session, User

from .batching import Batched


def hash_token(token: str) -> bytes:
    """Sessions are stored by the SHA-256 of their token: a database dump holds no usable token."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_at: datetime
    principal: Principal
    must_change_password: bool


class OperatorService:
    def __init__(self, db: Database, policy: LoginPolicy, min_password_length: int,
                 device_secret_key: str = "", throttle: AddressThrottle | None = None) -> None:
        self.db = db
        self.policy = policy
        self.min_password_length = min_password_length
        self.device_secret_key = device_secret_key
        self.throttle = throttle or AddressThrottle(30, 300.0)
        # server.require_device_cert: a device without a client certificate is refused (docs/security.md)
        self.require_device_cert = False
        # devices proving themselves at the same moment (a reconnect storm) are looked up together
        self._device_reads = Batched(self._read_devices, "device-reads")

    @classmethod
    def from_settings(cls, db: Database, auth: AuthSettings) -> OperatorService:
        policy = LoginPolicy(
            max_failed_logins=auth.max_failed_logins,
            lockout=timedelta(minutes=auth.lockout_minutes),
            session_lifetime=timedelta(hours=auth.session_hours),
        )
        return cls(db, policy, auth.min_password_length, auth.device_secret_key,
                   AddressThrottle(auth.max_failed_logins_per_address, auth.address_window_minutes * 60))

    # --- sessions ------------------------------------------------------------

    async def login(
        self, username: str, password: str, device_id: str, peer: str, device_secret: str = ""
    ) -> LoginResult:
        now = datetime.now(UTC)
        address = source_address(peer)
        wait = self.throttle.blocked_for(address)
        if wait > 0:
            raise Unauthenticated(f"too many failed log-ins from {address}: try again in {wait:.0f}s",
                                  Reason.LOGIN_THROTTLED)
        async with self.db.transaction() as conn:
            account = await store.account_for_login(conn, username)
            check_can_log_in(account, now)
            stored_hash = account.password_hash if account else None
            ok = await asyncio.to_thread(passwords.verify_password, stored_hash, password)
            if account is not None and not ok:
                # Committed before the refusal is raised: the failure must count.
                failures = account.failed_logins + 1
                await store.record_failed_login(conn, account.user_id, lock_after_failure(failures, self.policy, now))
        if not ok or account is None:
            self.throttle.failed(address)
            raise Unauthenticated("wrong user name or password", Reason.BAD_CREDENTIALS)
        if device_id:
            await self.verify_device(device_id, device_secret)
        async with self.db.transaction() as conn:
            new_hash = None
            if passwords.needs_rehash(account.password_hash):
                new_hash = await asyncio.to_thread(passwords.hash_password, password)
            must_change_password = await store.record_successful_login(conn, account.user_id, new_hash)
            token = secrets.token_urlsafe(32)
            expires_at = now + self.policy.session_lifetime
            await store.create_session(
                conn, token_hash=hash_token(token), user_id=account.user_id,
                device_id=device_id or None, peer=peer, expires_at=expires_at,
            )
            principal = await store.principal_for_token(conn, hash_token(token))
        assert principal is not None
        return LoginResult(token, expires_at, principal, must_change_password)

    async def verify_device(self, device_id: str, secret: str, *, enrolling: bool = False) -> DeviceWithSecret:
        """The registered, enabled device proven by its secret (S2); the refusal says which check failed.

        A client certificate on the call must name this device (checked first, it costs nothing); with
        ``server.require_device_cert`` there must be one, except for an enrolment (how a device gets its first).
        The secret stays a second factor: a certificate alone does not authenticate.
        """
        device_certs.check(device_id, required=self.require_device_cert and not enrolling)
        device = await self._device_reads(device_id)
        if device is None:
            raise Unauthenticated(f"device {device_id!r} is not registered", Reason.UNKNOWN_DEVICE)
        if device.disabled:
            raise Unauthenticated(f"device {device_id!r} is disabled", Reason.DEVICE_DISABLED)
        stored = device.secret_hash
        if device_secrets.is_fast(stored):
            ok = device_secrets.verify_fast(stored, secret, self.device_secret_key)
        else:
            ok = await asyncio.to_thread(device_secrets.verify_legacy, stored, secret)
            if ok:  # an argon2 hash from before: the next check is the fast one
                async with self.db.transaction() as conn:
                    await device_store.replace_secret_hash(
                        conn, device_id, stored, device_secrets.hash_secret(secret, self.device_secret_key))
        if not ok:
            raise Unauthenticated(f"wrong secret for device {device_id!r}", Reason.BAD_DEVICE_CREDENTIALS)
        return device

    async def _read_devices(self, device_ids: list[str]) -> list[DeviceWithSecret | None]:
        async with self.db.connection() as conn:
            found = await device_store.get_many(conn, device_ids)
        return [found.get(device_id) for device_id in device_ids]

    async def authenticate(self, token: str) -> Principal:
        if not token:
            raise Unauthenticated("log in first: no session token on the call")
        async with self.db.connection() as conn:
            principal = await store.principal_for_token(conn, hash_token(token))
        if principal is None:
            raise Unauthenticated("the session is unknown, ended or expired: log in again", Reason.SESSION_EXPIRED)
        return principal

    async def logout(self, principal: Principal) -> None:
        async with self.db.transaction() as conn:
            await store.end_session(conn, principal.session_id)

    async def end_session(self, session_id: str) -> None:
        try:  # session ids are UUIDs: anything else names no session (and must not reach the uuid column)
            uuid.UUID(session_id)
        except ValueError:
            raise NotFound(f"no open session {session_id!r}") from None
        async with self.db.transaction() as conn:
            if not await store.end_session(conn, session_id):
                raise NotFound(f"no open session {session_id!r}")

    async def open_sessions(self) -> list[Session]:
        async with self.db.connection() as conn:
            return await store.open_sessions(conn)

    # --- passwords -------------------------------------------------------------

    async def change_password(self, principal: Principal, old_password: str, new_password: str) -> None:
        passwords.check_policy(new_password, username=principal.username, min_length=self.min_password_length)
        if old_password == new_password:
            raise InvalidArgument("the new password must differ from the old one", Reason.PASSWORD_REUSED)
        async with self.db.transaction() as conn:
            current = await store.password_hash(conn, principal.user_id)
            if not await asyncio.to_thread(passwords.verify_password, current, old_password):
                raise Unauthenticated("the old password is wrong", Reason.BAD_CREDENTIALS)
            new_hash = await asyncio.to_thread(passwords.hash_password, new_password)
            await store.set_password(conn, principal.user_id, new_hash, must_change=False)
            # Other sessions of this user end: a changed password locks out whoever else knew the old one.
            await store.end_sessions_of_user(conn, principal.user_id, except_session=principal.session_id)

    async def reset_password(self, username: str, new_password: str) -> None:
        passwords.check_policy(new_password, username=username, min_length=self.min_password_length)
        new_hash = await asyncio.to_thread(passwords.hash_password, new_password)
        async with self.db.transaction() as conn:
            user = await store.get_user(conn, username)
            if user is None:
                raise NotFound(f"no user {username!r}")
            await store.set_password(conn, user.id, new_hash, must_change=True)
            await store.end_sessions_of_user(conn, user.id)

    # --- users ------------------------------------------------------------------

    async def create_user(
        self, username: str, display_name: str, password: str, roles: list[str], *, must_change_password: bool = True
    ) -> User:
        passwords.check_policy(password, username=username, min_length=self.min_password_length)
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with self.db.transaction() as conn:
            await self._check_roles(conn, roles)
            if await store.get_user(conn, username) is not None:
                raise Conflict(f"user {username!r} exists", Reason.ALREADY_EXISTS)
            await store.create_user(
                conn, username=username, display_name=display_name, password_hash=password_hash,
                roles=roles, must_change_password=must_change_password,
            )
            user = await store.get_user(conn, username)
        assert user is not None
        return user

    async def create_first_admin(self, username: str = "admin") -> str | None:
        """Create the first admin with a random password, once; returns the password or None if users exist."""
        password = passwords.generate_password()
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with self.db.transaction() as conn:
            await conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
            if await store.count_users(conn) > 0:
                return None
            await store.create_user(
                conn, username=username, display_name="First administrator", password_hash=password_hash,
                roles=[ADMIN_ROLE], must_change_password=False,
            )
        return password

    async def update_user(
        self, username: str, *, display_name: str | None, roles: list[str] | None, disabled: bool | None
    ) -> User:
        async with self.db.transaction() as conn:
            user_id = await store.update_user(conn, username, display_name=display_name, disabled=disabled)
            if user_id is None:
                raise NotFound(f"no user {username!r}")
            if roles is not None:
                await self._check_roles(conn, roles)
                await store.set_user_roles(conn, user_id, roles)
            if disabled:
                await store.end_sessions_of_user(conn, user_id)
            user = await store.get_user(conn, username)
        assert user is not None
        return user

    async def list_users(self, include_disabled: bool) -> list[User]:
        async with self.db.connection() as conn:
            return await store.list_users(conn, include_disabled)

    async def _check_roles(self, conn: Connection, roles: list[str]) -> None:
        missing = set(roles) - await store.role_exists(conn, roles)
        if missing:
            raise InvalidArgument(f"unknown roles: {', '.join(sorted(missing))}", Reason.NOT_FOUND)

    # --- roles ------------------------------------------------------------------

    async def list_roles(self) -> list[Role]:
        async with self.db.connection() as conn:
            return await store.list_roles(conn)

    async def list_permissions(self) -> list[Permission]:
        async with self.db.connection() as conn:
            return await store.list_permissions(conn)

    async def put_role(self, name: str, description: str, permissions: list[str]) -> Role:
        unknown = set(permissions) - set(PERMISSIONS)
        if unknown:
            raise InvalidArgument(f"unknown permissions: {', '.join(sorted(unknown))}")
        if name == ADMIN_ROLE and set(permissions) != set(PERMISSIONS):
            raise Forbidden("the admin role always holds every permission")
        async with self.db.transaction() as conn:
            await store.put_role(conn, name, description, permissions)
            roles = await store.list_roles(conn)
        return next(r for r in roles if r.name == name)

    async def delete_role(self, name: str) -> None:
        async with self.db.transaction() as conn:
            if not await store.delete_role(conn, name):
                raise Conflict(f"role {name!r} does not exist or is built in", Reason.CONFLICT)
