"""Every permission parkgate knows, and the roles a new installation starts with.

Permissions are data: the RPCs name the one they need in the contract
(``option (access)``), roles are rows an admin edits live (S3), and this module
is the catalogue both are checked against. A test asserts that every
permission named in the contract is listed here, so a typo cannot silently
lock everybody out of an RPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Implicit for every logged-in operator: whoami, log-out, change own password.
SELF = "self"

PERMISSIONS: Mapping[str, str] = {
    "catalog.read": "See parks, attractions, products, prices and holidays",
    "catalog.write": "Create and change parks, attractions and products",
    "catalog.prices": "Set prices and the holiday calendar",
    "sales.read": "Look up orders, tickets, refunds, vouchers, members",
    "sales.sell": "Sell tickets and cards at a window",
    "sales.refund": "Refund tickets and orders",
    "sales.refund_used": "Refund tickets that were already used",
    "sales.configure": "Configure refund reasons and sales settings",
    "sales.vouchers": "Issue, change and delete exchange vouchers",
    "sales.groups": "Reserve group tickets",
    "sales.members": "Register and change member cards",
    "sales.backentry": "Enter sales made by hand during an outage",
    "members.personal": "See members' ID documents and photos (personal data)",
    "gates.read": "See gates and occupancy",
    "gates.capacity": "Change a park's capacity cap",
    "gates.emergency": "Open all gates of a park in an emergency and release them",
    "gates.checks": "Confirm a held check (a member's photo looked at) from the control room",
    "reports.read": "Run reports",
    "reports.live": "Watch the live visitor flow",
    "admin.users.read": "See operators",
    "admin.users.write": "Create, change, disable operators and reset passwords",
    "admin.roles.read": "See roles and permissions",
    "admin.roles.write": "Change roles and their permissions",
    "admin.devices.read": "See registered devices",
    "admin.devices.write": "Register, disable and re-key devices",
    "admin.params.read": "See parameters and the display dictionary",
    "admin.params.write": "Change parameters and the display dictionary",
    "admin.audit.read": "Read the operation log and verify its hash chains",
    "admin.keys.read": "See the ticket signing keys",
    "admin.keys.write": "Rotate, retire and revoke ticket signing keys",
    "admin.sessions.read": "See who is online",
    "admin.sessions.write": "End other operators' sessions",
    "ops.read": "See server, cluster and power status",
    "sites.read": "See tickets admitted at two sites during a partition (site conflicts)",
    "sites.write": "Revoke a signing key (a site's or the cluster's) centrally",
}


@dataclass(frozen=True, slots=True)
class RoleTemplate:
    name: str
    description: str
    permissions: frozenset[str]


def _role(name: str, description: str, *prefixes: str) -> RoleTemplate:
    perms = frozenset(p for p in PERMISSIONS if any(p == x or p.startswith(x + ".") for x in prefixes))
    return RoleTemplate(name, description, perms)


# The admin role is kept holding every permission (also ones added by later
# versions); the others are starting points a park edits to taste.
ADMIN_ROLE = "admin"
BUILTIN_ROLES: tuple[RoleTemplate, ...] = (
    RoleTemplate(ADMIN_ROLE, "Everything, including users and roles", frozenset(PERMISSIONS)),
    _role("manager", "Reports, live flow, capacity, refunds", "reports", "gates", "sales", "catalog.read"),
    _role("seller", "Sells at a window", "sales.sell", "sales.read", "sales.members", "catalog.read"),
    _role("checker", "Checks tickets with a handheld", "gates.read", "catalog.read", "sales.read"),
    _role("sre", "Runs the servers", "ops", "gates.read", "admin.devices.read", "admin.sessions.read"),
)


def is_known(permission: str) -> bool:
    return permission == SELF or permission in PERMISSIONS


def grants(held: frozenset[str], required: str) -> bool:
    """Whether a set of held permissions allows an RPC needing ``required``."""
    return required == SELF or required in held
