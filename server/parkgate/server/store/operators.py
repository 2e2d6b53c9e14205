"""SQL for operators: users, roles, permissions and sessions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from parkgate.server.domain.operators import Account, Principal
from parkgate.server.domain.permissions import ADMIN_ROLE, BUILTIN_ROLES, PERMISSIONS

from .database import Connection
from .fetch import fetch_all, fetch_one
from .rows.operators import Permission, Role, Session, User


async def sync_permission_catalog(conn: Connection) -> None:
    """Make the permissions table match this version's catalogue; create missing builtin roles.

    The admin role is kept holding every permission; other builtin roles are
    created once and then belong to the park (an admin may change them).
    """
    await conn.execute(
        """INSERT INTO permissions (name, description) SELECT * FROM unnest(%s::text[], %s::text[])
           ON CONFLICT (name) DO UPDATE SET description = excluded.description""",
        (list(PERMISSIONS), list(PERMISSIONS.values())),
    )
    await conn.execute("DELETE FROM permissions WHERE NOT (name = ANY(%s))", (list(PERMISSIONS),))
    for role in BUILTIN_ROLES:
        cur = await conn.execute(
            """INSERT INTO roles (name, description, builtin) VALUES (%s, %s, true)
               ON CONFLICT (name) DO NOTHING RETURNING name""",
            (role.name, role.description),
        )
        created = await cur.fetchone() is not None
        if created or role.name == ADMIN_ROLE:
            await conn.execute(
                """INSERT INTO role_permissions (role, permission) SELECT %s, unnest(%s::text[])
                   ON CONFLICT DO NOTHING""",
                (role.name, sorted(role.permissions)),
            )


async def count_users(conn: Connection) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM users")).fetchone()
    return int(row["n"]) if row else 0


async def create_user(
    conn: Connection,
    *,
    username: str,
    display_name: str,
    password_hash: str,
    roles: Iterable[str],
    must_change_password: bool,
) -> str:
    row = await (
        await conn.execute(
            """INSERT INTO users (username, display_name, password_hash, must_change_password)
               VALUES (%s, %s, %s, %s) RETURNING id::text""",
            (username, display_name, password_hash, must_change_password),
        )
    ).fetchone()
    assert row is not None
    await set_user_roles(conn, row["id"], roles)
    return str(row["id"])


async def set_user_roles(conn: Connection, user_id: str, roles: Iterable[str]) -> None:
    await conn.execute("DELETE FROM user_roles WHERE user_id = %s", (user_id,))
    await conn.execute(
        "INSERT INTO user_roles (user_id, role) SELECT %s, unnest(%s::text[])", (user_id, sorted(set(roles)))
    )


_USER_COLUMNS = """u.id::text AS id, u.username, u.display_name, u.disabled, u.must_change_password,
    (u.locked_until IS NOT NULL AND u.locked_until > now()) AS locked, u.created_at, u.last_login_at,
    coalesce((SELECT array_agg(role ORDER BY role) FROM user_roles r WHERE r.user_id = u.id), '{}') AS roles"""


async def list_users(conn: Connection, include_disabled: bool) -> list[User]:
    return await fetch_all(
        conn, User, f"SELECT {_USER_COLUMNS} FROM users u WHERE %s OR NOT u.disabled ORDER BY u.username",
        (include_disabled,),
    )


async def get_user(conn: Connection, username: str) -> User | None:
    return await fetch_one(conn, User, f"SELECT {_USER_COLUMNS} FROM users u WHERE u.username = %s", (username,))


async def update_user(
    conn: Connection, username: str, *, display_name: str | None, disabled: bool | None
) -> str | None:
    row = await (
        await conn.execute(
            """UPDATE users SET display_name = coalesce(%s, display_name), disabled = coalesce(%s, disabled)
               WHERE username = %s RETURNING id::text""",
            (display_name, disabled, username),
        )
    ).fetchone()
    return row["id"] if row else None


async def account_for_login(conn: Connection, username: str) -> Account | None:
    """The user row, locked FOR UPDATE so concurrent failures count exactly."""
    row = await (
        await conn.execute(
            """SELECT id::text, username, password_hash, disabled, failed_logins, locked_until
               FROM users WHERE username = %s FOR UPDATE""",
            (username,),
        )
    ).fetchone()
    if row is None:
        return None
    return Account(row["id"], row["username"], row["password_hash"], row["disabled"],
                   row["failed_logins"], row["locked_until"])


async def record_failed_login(conn: Connection, user_id: str, locked_until: datetime | None) -> None:
    await conn.execute(
        "UPDATE users SET failed_logins = failed_logins + 1, locked_until = coalesce(%s, locked_until) WHERE id = %s",
        (locked_until, user_id),
    )


async def record_successful_login(conn: Connection, user_id: str, new_hash: str | None) -> bool:
    """Reset the failure count, note the log-in; returns whether the user must change their password."""
    row = await (
        await conn.execute(
            """UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = now(),
                   password_hash = coalesce(%s, password_hash)
               WHERE id = %s RETURNING must_change_password""",
            (new_hash, user_id),
        )
    ).fetchone()
    assert row is not None
    return bool(row["must_change_password"])


async def password_hash(conn: Connection, user_id: str) -> str | None:
    row = await (await conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,))).fetchone()
    return row["password_hash"] if row else None


async def set_password(conn: Connection, user_id: str, new_hash: str, *, must_change: bool) -> None:
    await conn.execute(
        """UPDATE users SET password_hash = %s, must_change_password = %s, password_changed_at = now(),
               failed_logins = 0, locked_until = NULL WHERE id = %s""",
        (new_hash, must_change, user_id),
    )


async def create_session(
    conn: Connection, *, token_hash: bytes, user_id: str, device_id: str | None, peer: str, expires_at: datetime
) -> str:
    row = await (
        await conn.execute(
            """INSERT INTO sessions (token_hash, user_id, device_id, peer, expires_at)
               VALUES (%s, %s, %s, %s, %s) RETURNING id::text""",
            (token_hash, user_id, device_id, peer, expires_at),
        )
    ).fetchone()
    assert row is not None
    return str(row["id"])


async def principal_for_token(conn: Connection, token_hash: bytes) -> Principal | None:
    """The open session with this token, with the user's current roles and permissions.

    One statement per call: permissions are never cached, so a role edit is
    effective on the next call (S3). Disabled users lose their sessions at once.
    """
    row = await (
        await conn.execute(
            """UPDATE sessions s SET last_seen_at = now()
               FROM users u
               WHERE s.token_hash = %s AND s.ended_at IS NULL AND s.expires_at > now()
                 AND u.id = s.user_id AND NOT u.disabled
               RETURNING s.id::text AS session_id, u.id::text AS user_id, u.username, s.device_id, s.expires_at,
                 coalesce((SELECT array_agg(role ORDER BY role) FROM user_roles r WHERE r.user_id = u.id), '{}')
                   AS roles,
                 coalesce((SELECT array_agg(DISTINCT rp.permission) FROM user_roles r
                           JOIN role_permissions rp ON rp.role = r.role WHERE r.user_id = u.id), '{}')
                   AS permissions""",
            (token_hash,),
        )
    ).fetchone()
    if row is None:
        return None
    return Principal(
        user_id=row["user_id"],
        username=row["username"],
        session_id=row["session_id"],
        device_id=row["device_id"],
        roles=tuple(row["roles"]),
        permissions=frozenset(row["permissions"]),
        expires_at=row["expires_at"],
    )


async def end_session(conn: Connection, session_id: str) -> bool:
    cur = await conn.execute(
        "UPDATE sessions SET ended_at = now() WHERE id = %s AND ended_at IS NULL RETURNING id", (session_id,)
    )
    return await cur.fetchone() is not None


async def end_sessions_of_user(conn: Connection, user_id: str, except_session: str | None = None) -> None:
    await conn.execute(
        "UPDATE sessions SET ended_at = now() WHERE user_id = %s AND ended_at IS NULL AND id IS DISTINCT FROM %s",
        (user_id, except_session),
    )


async def open_sessions(conn: Connection) -> list[Session]:
    return await fetch_all(
        conn, Session,
        """SELECT s.id::text AS id, s.user_id::text AS user_id, u.username, coalesce(s.device_id, '') AS device_id,
                  s.peer, s.created_at, s.last_seen_at, s.expires_at
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.ended_at IS NULL AND s.expires_at > now() ORDER BY s.created_at""",
    )


async def list_roles(conn: Connection) -> list[Role]:
    return await fetch_all(
        conn, Role,
        """SELECT r.name, r.description, r.builtin,
                  coalesce(array_agg(rp.permission ORDER BY rp.permission)
                           FILTER (WHERE rp.permission IS NOT NULL), '{}') AS permissions
           FROM roles r LEFT JOIN role_permissions rp ON rp.role = r.name
           GROUP BY r.name ORDER BY r.name""",
    )


async def put_role(conn: Connection, name: str, description: str, permissions: Iterable[str]) -> None:
    await conn.execute(
        """INSERT INTO roles (name, description) VALUES (%s, %s)
           ON CONFLICT (name) DO UPDATE SET description = excluded.description""",
        (name, description),
    )
    await conn.execute("DELETE FROM role_permissions WHERE role = %s", (name,))
    await conn.execute(
        "INSERT INTO role_permissions (role, permission) SELECT %s, unnest(%s::text[])",
        (name, sorted(set(permissions))),
    )


async def delete_role(conn: Connection, name: str) -> bool:
    cur = await conn.execute("DELETE FROM roles WHERE name = %s AND NOT builtin RETURNING name", (name,))
    return await cur.fetchone() is not None


async def role_exists(conn: Connection, names: Iterable[str]) -> set[str]:
    cur = await conn.execute("SELECT name FROM roles WHERE name = ANY(%s)", (list(names),))
    return {r["name"] for r in await cur.fetchall()}


async def list_permissions(conn: Connection) -> list[Permission]:
    return await fetch_all(conn, Permission, "SELECT name, description FROM permissions ORDER BY name")
