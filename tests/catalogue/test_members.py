"""Member cards (S15) on a real server: a family registered with photos, found, held for a photo check at the
gate, reported lost (blocked at once), reissued for a fee with its history kept; personal data guarded."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from parkgate.v1 import admin_pb2, gate_pb2, sales_pb2
from tests.fixtures.server import reason_of

from .conftest import REPLACEMENT_FEE, Catalogue, cash, jpeg, rid


def member(name: str, uid: str, **kw: str) -> sales_pb2.Member:
    return sales_pb2.Member(name=name, card_uid=uid, product_id="member", **kw)


async def register(cat: Catalogue, *people: tuple[str, str], photo: bytes = b"", request_id: str = "",
                   **kw: str) -> sales_pb2.Member:
    first, *rest = people
    return await cat.seller.sales.RegisterMember(sales_pb2.RegisterMemberRequest(
        request_id=request_id or rid(), member=member(*first, **kw), photo_jpeg=photo,
        family=[sales_pb2.FamilyMember(member=member(*p), photo_jpeg=jpeg(300, 300)) for p in rest]),
        metadata=cat.seller.metadata)


async def test_a_family_set_is_one_purchase_with_a_card_each_and_is_found(cat: Catalogue) -> None:
    request_id = rid()
    head = await register(cat, ("Li Wei", "04A1000001"), ("Li Na", "04A1000002"), ("Li Ming", "04A1000003"),
                          photo=jpeg(2000, 1500), request_id=request_id, phone="13800000001",
                          id_document="110101199001011234")
    assert head.family_id and head.ticket_id and head.valid_until.seconds > 0
    again = await register(cat, ("Li Wei", "04A1000001"), ("Li Na", "04A1000002"), ("Li Ming", "04A1000003"),
                           photo=jpeg(2000, 1500), request_id=request_id, phone="13800000001",
                           id_document="110101199001011234")
    assert again.id == head.id  # a retry registers nobody twice
    (orders, total), = cat.sql("SELECT count(DISTINCT order_id), sum(price) FROM tickets WHERE order_id = "
                               "(SELECT order_id FROM members WHERE id = %s)", head.id)
    assert orders == 1 and total == 3 * 1000
    family = await cat.seller.sales.FindMembers(sales_pb2.FindMembersRequest(name="li "), metadata=cat.seller.metadata)
    assert sorted(m.name for m in family.members) == ["Li Ming", "Li Na", "Li Wei"]
    assert {m.family_id for m in family.members} == {head.family_id}
    by_card = await cat.seller.sales.FindMembers(sales_pb2.FindMembersRequest(card_uid="04:a1:00:00:02"),
                                                 metadata=cat.seller.metadata)
    assert [m.name for m in by_card.members] == ["Li Na"]
    by_phone = await cat.seller.sales.FindMembers(sales_pb2.FindMembersRequest(phone="13800000001"),
                                                  metadata=cat.seller.metadata)
    assert [m.name for m in by_phone.members] == ["Li Wei"]
    # the photo is stored resized, as a JPEG
    (size, head_bytes), = cat.sql("SELECT length(photo), substring(photo from 1 for 2) FROM members WHERE id = %s",
                                  head.id)
    assert head_bytes == b"\xff\xd8" and 0 < size < len(jpeg(2000, 1500))


async def test_personal_data_is_only_for_members_personal(cat: Catalogue) -> None:
    await register(cat, ("Zhao Min", "04A1000010"), photo=jpeg(), id_document="ID-SECRET-77")
    seller_view = (await cat.seller.sales.FindMembers(sales_pb2.FindMembersRequest(name="zhao"),
                                                      metadata=cat.seller.metadata)).members[0]
    assert seller_view.personal_hidden and seller_view.id_document == "" and seller_view.photo_ref == ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cat.seller.sales.GetMemberPhoto(sales_pb2.GetMemberPhotoRequest(member_id=seller_view.id),
                                              metadata=cat.seller.metadata)
    assert reason_of(err.value) == "PERMISSION_DENIED"
    admin_view = (await cat.admin.sales.FindMembers(sales_pb2.FindMembersRequest(name="zhao"),
                                                    metadata=cat.admin.metadata)).members[0]
    assert admin_view.id_document == "ID-SECRET-77" and admin_view.photo_ref == admin_view.id
    photo = await cat.admin.sales.GetMemberPhoto(sales_pb2.GetMemberPhotoRequest(member_id=admin_view.id),
                                                 metadata=cat.admin.metadata)
    assert photo.jpeg[:2] == b"\xff\xd8"
    log = await cat.admin.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(), metadata=cat.admin.metadata)
    assert any("RegisterMember" in r.method for r in log.records)
    assert not any("ID-SECRET-77" in r.summary for r in log.records)


@pytest.mark.parametrize(("photo", "reason"), [
    (b"GIF89a but not really an image", "PHOTO_NOT_AN_IMAGE"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "PHOTO_NOT_AN_IMAGE"),
    (b"\xff\xd8" + b"\x00" * (2 * 1024 * 1024 + 1), "PHOTO_TOO_LARGE"),
])
async def test_a_photo_that_is_not_an_image_or_too_large_is_refused(cat: Catalogue, photo: bytes, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await register(cat, ("Bad Photo", "04A10000F1"), photo=photo)
    assert reason_of(err.value) == reason
    assert cat.sql("SELECT count(*) FROM members WHERE name = 'Bad Photo'") == [(0,)]


async def test_bad_member_input_is_refused_with_a_reason(cat: Catalogue) -> None:
    for call, expected in (
        (cat.seller.sales.RegisterMember(sales_pb2.RegisterMemberRequest(
            request_id=rid(), member=sales_pb2.Member(name="X", card_uid="04A10000E1", product_id="day")),
            metadata=cat.seller.metadata), "NOT_A_MEMBER_CARD"),
        (cat.seller.sales.ReportCardLost(sales_pb2.ReportCardLostRequest(
            member_id="00000000-0000-0000-0000-000000000000"), metadata=cat.seller.metadata), "UNKNOWN_MEMBER"),
        (cat.seller.sales.ReissueCard(sales_pb2.ReissueCardRequest(
            request_id=rid(), member_id="not-an-id", new_card_uid="04A10000E2"), metadata=cat.seller.metadata),
         "UNKNOWN_MEMBER"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert reason_of(err.value) == expected


async def test_held_for_check_with_photo_lost_blocked_at_once_and_reissued_with_fee(cat: Catalogue) -> None:
    gate = await cat.gate("m-gate")
    other_server_gate = await cat.gate("m-gate-2", server=1)
    m = await register(cat, ("Sun Li", "04A1000020"), photo=jpeg())
    held = await gate.validate(rid(), card_uid="04A1000020")
    assert held.allow and held.hold_for_check and held.photo_ref == m.id

    # the control room confirms the held check from its console; the gate hears CONFIRM_CHECK and acknowledges
    async def ack_next() -> None:
        command = await asyncio.wait_for(gate.commands.get(), 20)
        assert command.kind == "CONFIRM_CHECK"
        gate.acknowledge(command.command_id, True, "opened")
    acker = asyncio.create_task(ack_next())
    confirmed = await cat.control().ConfirmCheck(gate_pb2.ConfirmCheckRequest(
        device_id="m-gate", request_id=held.request_id), metadata=cat.admin.metadata)
    await acker
    assert confirmed.delivered

    lost = await cat.seller.sales.ReportCardLost(sales_pb2.ReportCardLostRequest(card_uid="04A1000020"),
                                                 metadata=cat.seller.metadata)
    assert lost.blocked
    assert (await other_server_gate.validate(rid(), card_uid="04A1000020")).reason == "CARD_BLOCKED"

    with pytest.raises(grpc.aio.AioRpcError) as err:  # the replacement fee must be paid in full
        await cat.seller.sales.ReissueCard(sales_pb2.ReissueCardRequest(
            request_id=rid(), member_id=m.id, new_card_uid="04A1000021", payments=[cash(REPLACEMENT_FEE - 1)]),
            metadata=cat.seller.metadata)
    assert reason_of(err.value) == "PAYMENT_MISMATCH"
    request_id = rid()
    new = await cat.seller.sales.ReissueCard(sales_pb2.ReissueCardRequest(
        request_id=request_id, member_id=m.id, new_card_uid="04A1000021", payments=[cash(REPLACEMENT_FEE)]),
        metadata=cat.seller.metadata)
    assert (new.card_uid, new.blocked, new.ticket_id) == ("04A1000021", False, m.ticket_id)
    again = await cat.seller.sales.ReissueCard(sales_pb2.ReissueCardRequest(
        request_id=request_id, member_id=m.id, new_card_uid="04A1000021", payments=[cash(REPLACEMENT_FEE)]),
        metadata=cat.seller.metadata)
    assert again.card_uid == "04A1000021"
    assert cat.sql("SELECT count(*), sum(total) FROM orders WHERE kind = 'card_reissue' AND request_id = %s",
                   request_id) == [(1, REPLACEMENT_FEE)]
    assert (await gate.validate(rid(), card_uid="04A1000021")).allow
    assert (await gate.validate(rid(), card_uid="04A1000020")).reason == "CARD_BLOCKED"  # the old card, for good
    history = await cat.seller.sales.CardHistory(sales_pb2.CardHistoryRequest(card_uid="04A1000021"),
                                                 metadata=cat.seller.metadata)
    kinds = [e.kind for e in history.events]
    assert {"issued", "lost", "reissued", "entry"} <= set(kinds)
    renewed = await cat.seller.sales.RenewMember(sales_pb2.RenewMemberRequest(
        request_id=rid(), member_id=m.id, payments=[cash(1000)]), metadata=cat.seller.metadata)
    assert renewed.valid_until.seconds >= new.valid_until.seconds + 364 * 86400
