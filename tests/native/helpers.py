"""Shared test data for tests/native (fixtures are in conftest.py)."""

from __future__ import annotations

from parkgate.native import SigningKey, Ticket, sign

NOW = 1_750_000_000  # 2025-06-15 15:06:40 UTC, 23:06:40 in Shanghai
SHANGHAI = 8 * 3600


def ticket(key_id: int = 1, **fields: object) -> Ticket:
    """A canonical payload: valid at park 3 all of 2025-06-15 (Shanghai), unless overridden."""
    args: dict[str, object] = {
        "key_id": key_id,
        "serial": 1234567,
        "product_id": 42,
        "park_id": 3,
        "valid_from": NOW - 3600,
        "valid_until": NOW + 3600,
    }
    args.update(fields)
    return Ticket.build(**args)  # type: ignore[arg-type]


def code_for(key: SigningKey, **fields: object) -> str:
    return sign(key, ticket(key.key_id, **fields))
