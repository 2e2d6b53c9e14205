"""The pure selling rules: refund rounding, validity windows, card UIDs, payments (no server needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parkgate.server.domain.errors import ParkgateError
from parkgate.server.domain.pricing import CalendarEntry, resolve_price
from parkgate.server.domain.sales import (
    PaymentIn,
    check_payments,
    normalize_card_uid,
    refund_amount,
    ticket_terms,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


@given(st.integers(0, 10**9), st.integers(0, 100))
def test_refund_is_the_percentage_rounded_half_up_and_never_more_than_paid(price: int, percent: int) -> None:
    amount = refund_amount(price, percent)
    exact = price * percent / 100
    assert 0 <= amount <= price
    assert abs(amount - exact) <= 0.5
    if (price * percent) % 100 == 50:
        assert amount > exact  # a half rounds up


def test_refund_examples() -> None:
    assert refund_amount(1001, 50) == 501
    assert refund_amount(1001, 33) == 330
    assert refund_amount(999, 80) == 799
    with pytest.raises(ParkgateError):
        refund_amount(100, 101)


def test_a_night_tour_past_midnight_stays_valid_into_the_next_morning() -> None:
    terms = ticket_terms("single", {"validity": "visit_date", "window_start_minute": 22 * 60,
                                    "window_end_minute": 2 * 60}, date(2027, 3, 3), SHANGHAI)
    assert terms.valid_from == datetime(2027, 3, 3, tzinfo=SHANGHAI)
    assert terms.valid_until.astimezone(UTC) == datetime(2027, 3, 3, 18, 0, tzinfo=UTC)  # 02:00 on the 4th
    assert terms.night_window == (22 * 60, 2 * 60)


def test_fixed_dates_cover_whole_local_days_and_refuse_sales_after_them() -> None:
    rules = {"validity": "fixed_dates", "valid_from": "2027-07-01", "valid_until": "2027-08-31"}
    terms = ticket_terms("single", rules, date(2027, 6, 1), SHANGHAI)
    assert terms.valid_until == datetime(2027, 9, 1, tzinfo=SHANGHAI)
    with pytest.raises(ParkgateError) as err:
        ticket_terms("single", rules, date(2027, 9, 1), SHANGHAI)
    assert err.value.reason_name == "PRODUCT_NOT_ON_SALE"


def test_card_uids_are_normalised_and_garbage_refused() -> None:
    assert normalize_card_uid("04:a1:b2:c3") == "04A1B2C3"
    for bad in ("", "04A1B2", "04A1B2C3D", "XYZW1234", "00" * 11):
        with pytest.raises(ParkgateError):
            normalize_card_uid(bad)


def test_payments_must_add_up() -> None:
    check_payments([PaymentIn("cash", 500), PaymentIn("mobile", 500)], 1000, "")
    for payments, customer, reason in (
        ([PaymentIn("cash", 999)], "", "PAYMENT_MISMATCH"),
        ([PaymentIn("on_account", 1000)], "", "PAYMENT_METHOD_NOT_ALLOWED"),
        ([PaymentIn("voucher", 1000)], "", "PAYMENT_METHOD_NOT_ALLOWED"),
        ([PaymentIn("gold", 1000)], "", "PAYMENT_METHOD_NOT_ALLOWED"),
    ):
        with pytest.raises(ParkgateError) as err:
            check_payments(payments, 1000, customer)
        assert err.value.reason_name == reason


def test_price_falls_back_only_from_peak_to_holiday() -> None:
    prices = {("weekday", ""): 100, ("holiday", ""): 300}
    assert resolve_price("p", date(2027, 3, 3), None, prices).unit_price == 100
    assert resolve_price("p", date(2027, 3, 3), CalendarEntry("peak", "x"), prices).unit_price == 300
    with pytest.raises(ParkgateError) as err:
        resolve_price("p", date(2027, 3, 6), None, prices)  # a Saturday without a weekend price
    assert err.value.reason_name == "PRICE_NOT_SET"
