"""The catalogue's pure rules: fares by day type, a group's arrivals, voucher redemption, member photos."""

from __future__ import annotations

import io
from datetime import date

import pytest
from PIL import Image

from parkgate.server.domain import catalogue as rules
from parkgate.server.domain.admission import fare_today
from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.photos import STORED_SIDE, store_photo
from parkgate.server.domain.pricing import CalendarEntry

SATURDAY, MONDAY = date(2026, 12, 5), date(2026, 12, 7)


def test_the_fare_follows_the_day_type_and_falls_back_as_prices_do() -> None:
    fares = {"weekday": 100, "weekend": 150, "holiday": 200, "": 90}
    assert fare_today(fares, MONDAY, None) == 100
    assert fare_today(fares, SATURDAY, None) == 150
    assert fare_today(fares, MONDAY, CalendarEntry("holiday")) == 200
    assert fare_today(fares, MONDAY, CalendarEntry("peak", "golden week")) == 200  # no peak fare: the holiday's
    assert fare_today({"": 90}, SATURDAY, None) == 90
    assert fare_today({}, SATURDAY, None) == 0


def test_fewer_arrivals_drop_from_the_last_lines_and_more_are_refused() -> None:
    mix = [rules.GroupLineIn("adult", 3, 500), rules.GroupLineIn("child", 2, 300)]
    assert rules.arrived_lines(mix, 4) == [rules.GroupLineIn("adult", 3, 500), rules.GroupLineIn("child", 1, 300)]
    assert rules.arrived_lines(mix, 2) == [rules.GroupLineIn("adult", 2, 500)]
    for bad in (0, 6, -1):
        with pytest.raises(ParkgateError) as err:
            rules.arrived_lines(mix, bad)
        assert err.value.reason == "INVALID_QUANTITY"
    with pytest.raises(ParkgateError):
        rules.group_lines(mix, 6)


def voucher(**kw: object) -> rules.VoucherState:
    base = {"code": "V1", "product_id": "", "value": 500, "valid_from": MONDAY, "valid_until": MONDAY,
            "state": "issued"}
    return rules.VoucherState(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "amount", "lines", "reason"), [
    (None, 100, [("day", True, 1000, 1)], "UNKNOWN_VOUCHER"),
    (voucher(state="redeemed"), 100, [("day", True, 1000, 1)], "VOUCHER_ALREADY_REDEEMED"),
    (voucher(state="cancelled"), 100, [("day", True, 1000, 1)], "VOUCHER_CANCELLED"),
    (voucher(valid_until=date(2026, 12, 6)), 100, [("day", True, 1000, 1)], "VOUCHER_EXPIRED"),
    (voucher(), 100, [("day", False, 1000, 1)], "VOUCHER_NOT_ALLOWED"),
    (voucher(), 501, [("day", True, 1000, 1)], "PAYMENT_MISMATCH"),
    (voucher(value=0, product_id="day"), 999, [("day", True, 1000, 1)], "PAYMENT_MISMATCH"),
    (voucher(value=0, product_id="night"), 1000, [("day", True, 1000, 1)], "VOUCHER_NOT_ALLOWED"),
])
def test_voucher_redemption_refusals(state: rules.VoucherState | None, amount: int,
                                     lines: list[tuple[str, bool, int, int]], reason: str) -> None:
    with pytest.raises(ParkgateError) as err:
        rules.check_redemption(state, "V1", amount, [rules.LineForVoucher(*x) for x in lines], MONDAY)
    assert err.value.reason == reason


def test_a_photo_is_stored_as_a_small_jpeg_whatever_came_in() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (1600, 900), (10, 20, 30, 128)).save(out, format="PNG")
    stored = store_photo(out.getvalue())
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "JPEG" and max(image.size) == STORED_SIDE


def test_in_one_batch_the_old_card_of_a_reissue_is_refused_and_the_new_one_admitted() -> None:
    from dataclasses import replace

    from parkgate.rules import GatePlace, ParkState, TicketState
    from parkgate.server.domain.admission import Admission, decide_batch

    member = TicketState(ticket_id="t1", serial=7, park_id="p", valid_from=0.0, valid_until=4e9,
                         reentry_allowed=True)
    place = GatePlace("g", "p", 1, "Asia/Shanghai")
    out_place = GatePlace("g-out", "p", 1, "Asia/Shanghai", direction="out")
    batch = [Admission(place, "r1", "in", card_uid="NEW"), Admission(out_place, "r2", "out", card_uid="NEW"),
             Admission(place, "r3", "in", card_uid="OLD"), Admission(place, "r4", "in", card_uid="NEW")]
    outcome = decide_batch(batch, 1.8e9, parks={"p": (ParkState("p"), "Asia/Shanghai")}, prior={},
                           by_serial={7: member}, by_card={"NEW": member, "OLD": replace(member, blocked=True)})
    assert [d.reason.value for d in outcome.decisions] == ["OK", "OK", "CARD_BLOCKED", "OK"]
    assert not outcome.tickets["t1"].blocked
