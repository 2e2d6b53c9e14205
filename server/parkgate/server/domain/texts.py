"""Built-in parameters and display texts a new installation starts with (S4).

Parks change both at run time; these are only the first values, inserted when
missing and never overwritten.
"""

from __future__ import annotations

from typing import Any

from parkgate.common.reason import Reason

DEFAULT_PARAMETERS: dict[str, tuple[Any, str]] = {
    "gate.default_language": ("en", "Language of gate texts when a device names none"),
    "gate.passage_timeout_seconds": (10, "An admission whose passage is not confirmed by then is annulled"),
    "sales.default_payment_method": ("CASH", "Payment method of a quick sale"),
    "reports.live_interval_seconds": (5, "How often the live flow feed refreshes"),
    "site.feed_history_seconds": (7 * 24 * 3600, "How long the site feed keeps removal marks; an edge further "
                                  "behind gets a full resync"),
}

#: The refund reasons a new installation starts with (S18); admins change them.
DEFAULT_REFUND_REASONS: tuple[dict[str, Any], ...] = (
    {"id": "customer-request", "label": "Customer changed plans", "refund_percent": 80, "disabled": False},
    {"id": "weather", "label": "Bad weather closure", "refund_percent": 100, "disabled": False},
    {"id": "park-fault", "label": "Fault of the park", "refund_percent": 100, "disabled": False},
)

_REASON_TEXTS_EN: dict[str, str] = {
    "OK": "Welcome",
    "ALREADY_USED": "Ticket already used",
    "EXPIRED": "Ticket expired",
    "NOT_YET_VALID": "Ticket not valid yet",
    "FORGED_CODE": "Invalid ticket",
    "MALFORMED_CODE": "Unreadable ticket",
    "OUTSIDE_TIME_WINDOW": "Not valid at this time",
    "NOT_VALID_FOR_ATTRACTION": "Not valid for this attraction",
    "NOT_VALID_FOR_PARK": "Not valid for this park",
    "PARK_FULL": "Park full - please wait",
    "REFUNDED": "Ticket refunded",
    "INSUFFICIENT_BALANCE": "Insufficient balance",
    "NO_ENTRIES_LEFT": "No entries left",
    "EMERGENCY_OPEN": "Emergency - gates open",
}

_REASON_TEXTS_ZH: dict[str, str] = {
    "OK": "欢迎光临",
    "ALREADY_USED": "票已使用",
    "EXPIRED": "票已过期",
    "FORGED_CODE": "无效票",
    "PARK_FULL": "园区已满，请稍候",
    "REFUNDED": "票已退",
}


def default_dictionary() -> list[tuple[str, str, str]]:
    """(key, language, text) rows; every reason gets at least an English text."""
    rows = []
    for name in (r.value for r in Reason):
        if name == "REASON_UNSPECIFIED":
            continue
        text = _REASON_TEXTS_EN.get(name) or name.replace("_", " ").capitalize()
        rows.append((f"reason.{name}", "en", text))
    rows += [(f"reason.{k}", "zh-CN", v) for k, v in _REASON_TEXTS_ZH.items()]
    return rows
