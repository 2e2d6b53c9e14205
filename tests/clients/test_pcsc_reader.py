"""The PC/SC card reader against a real pcscd, the vpcd virtual reader and our virtual card tool."""

from __future__ import annotations

import threading
import time

import pytest

from parkgate.clients.devices import (
    CardRemoved,
    CardStatusError,
    DeviceClosed,
    DeviceNotFound,
    NoCard,
    PcscCardReader,
    list_readers,
)
from tests.fixtures.pcsc import PcscStack


def test_the_stack_shows_the_virtual_readers(pcsc_stack: PcscStack) -> None:
    names = list_readers()
    assert pcsc_stack.reader_name(0) in names
    assert pcsc_stack.reader_name(1) in names


def test_a_presented_card_is_read_as_upper_case_hex_uid(pcsc_stack: PcscStack, virtual_card) -> None:
    virtual_card("04a1b2c3d4e5f6")
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader:
        assert reader.read_uid(timeout=10) == "04A1B2C3D4E5F6"


def test_the_reader_is_chosen_by_a_case_insensitive_name_substring(
    pcsc_stack: PcscStack, virtual_card
) -> None:
    virtual_card("0A0B0C0D", slot=1)
    with PcscCardReader("virtual pcd 00 01") as reader:
        assert reader.read_uid(timeout=10) == "0A0B0C0D"
        assert reader.name == "virtual pcd 00 01"


def test_no_matching_reader_names_the_readers_there_are(pcsc_stack: PcscStack) -> None:
    with PcscCardReader("ACR122") as reader, pytest.raises(DeviceNotFound) as caught:
        reader.read_uid(timeout=1)
    assert pcsc_stack.reader_name(0) in str(caught.value)


def test_no_card_within_the_timeout(pcsc_stack: PcscStack) -> None:
    with PcscCardReader(pcsc_stack.reader_name(1)) as reader:
        with pytest.raises(NoCard):
            reader.read_uid(timeout=0.5)  # NoCard, not a hang (pytest's own timeout would say so)


def test_a_card_arriving_during_the_wait_is_read(pcsc_stack: PcscStack, virtual_card) -> None:
    card = virtual_card("04112233445566", removed=True)
    threading.Timer(0.5, card.insert).start()
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader:
        assert reader.read_uid(timeout=10) == "04112233445566"


def test_a_status_other_than_9000_is_a_card_status_error(pcsc_stack: PcscStack, virtual_card) -> None:
    virtual_card("04A1B2C3D4E5F6", status="6A81")
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader, pytest.raises(CardStatusError) as caught:
        reader.read_uid(timeout=10)
    assert caught.value.sw == 0x6A81
    assert caught.value.sw_hex == "6A81"


def test_other_apdus_go_through_transmit(pcsc_stack: PcscStack, virtual_card) -> None:
    virtual_card("04A1B2C3D4E5F6")
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader, reader.wait_for_card(timeout=10) as card:
        assert card.atr.hex().upper().startswith("3B8F8001804F")
        assert card.transmit(bytes.fromhex("FFCA000007")) == bytes.fromhex("04A1B2C3D4E5F6")
        with pytest.raises(CardStatusError) as caught:
            card.transmit(bytes.fromhex("00A4040000"))  # not a PC/SC pseudo-APDU: class not supported
        assert caught.value.sw == 0x6E00


def test_a_card_taken_away_during_the_exchange_is_card_removed(pcsc_stack: PcscStack, virtual_card) -> None:
    card_process = virtual_card("04A1B2C3D4E5F6")
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader, reader.wait_for_card(timeout=10) as card:
        card_process.remove()
        with pytest.raises(CardRemoved):
            for _ in range(50):  # pcscd notices the empty field within its polling period
                card.uid()
                time.sleep(0.1)


def test_wait_for_removal_and_a_second_card(pcsc_stack: PcscStack, virtual_card) -> None:
    card_process = virtual_card("04A1B2C3D4E5F6")
    with PcscCardReader(pcsc_stack.reader_name(0)) as reader:
        assert reader.read_uid(timeout=10) == "04A1B2C3D4E5F6"
        assert reader.wait_for_removal(timeout=0.3) is False  # still lying on the reader
        card_process.remove()
        assert reader.wait_for_removal(timeout=10) is True
        card_process.swap("08090A0B")
        assert reader.read_uid(timeout=10) == "08090A0B"


def test_close_from_another_thread_ends_a_wait(pcsc_stack: PcscStack) -> None:
    reader = PcscCardReader(pcsc_stack.reader_name(1))
    threading.Timer(0.3, reader.close).start()
    with pytest.raises(DeviceClosed):
        reader.read_uid(timeout=600)  # DeviceClosed, not NoCard: the close ended the wait, not its timeout
    with pytest.raises(DeviceClosed):
        reader.read_uid(timeout=1)
