"""The ESC/POS printer on a socat pseudo-terminal pair: the test reads what a printer would receive."""

from __future__ import annotations

import threading
import time

import pytest
import serial

from parkgate.clients.devices import (
    DeviceNotFound,
    DeviceTimeout,
    SerialPrinter,
    SerialSettings,
)
from parkgate.clients.tickets import EscPosLayout, escpos_ticket
from parkgate.clients.tickets.escpos import PARTIAL_CUT
from tests.clients.helpers import qr_payload, sold_ticket, verifies
from tests.fixtures.serial import PtyPair


def read_until_cut(port: serial.Serial, timeout: float = 5.0) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while not data.endswith(PARTIAL_CUT) and time.monotonic() < deadline:
        data += port.read(max(1, port.in_waiting))
    return bytes(data)


def test_a_printed_ticket_arrives_whole_with_the_qr_payload_and_the_cut(pty_pair: PtyPair) -> None:
    ticket = sold_ticket()
    far = pty_pair.open_far(timeout=0.2)
    with SerialPrinter(SerialSettings(pty_pair.device, baudrate=19200), EscPosLayout(paper_mm=80)) as printer:
        printer.print_ticket(ticket)
        received = read_until_cut(far)
    assert received == escpos_ticket(ticket, EscPosLayout(paper_mm=80))
    payload = qr_payload(received).decode("ascii")
    assert payload == ticket.code
    assert verifies(payload)
    assert received.endswith(PARTIAL_CUT)


def test_a_printer_that_stops_taking_bytes_times_out(pty_pair: PtyPair) -> None:
    # Nobody reads the far end: the pty and socat's buffers fill, then the write blocks.
    with SerialPrinter(SerialSettings(pty_pair.device), write_timeout=0.5) as printer:
        with pytest.raises(DeviceTimeout):
            for _ in range(400):
                printer.write(b"x" * 16384)


def test_printing_from_two_threads_does_not_interleave_tickets(pty_pair: PtyPair) -> None:
    first, second = sold_ticket(park_name="Park A"), sold_ticket(park_name="Park B")
    far = pty_pair.open_far(timeout=0.2)
    with SerialPrinter(SerialSettings(pty_pair.device)) as printer:
        threads = [threading.Thread(target=printer.print_ticket, args=(t,)) for t in (first, second)]
        for thread in threads:
            thread.start()
        received = read_until_cut(far)
        received += read_until_cut(far)
        for thread in threads:
            thread.join()
    one, two = escpos_ticket(first), escpos_ticket(second)
    assert received in (one + two, two + one)


def test_a_missing_printer_port_is_device_not_found() -> None:
    with pytest.raises(DeviceNotFound):
        SerialPrinter(SerialSettings("/dev/ttyNO-SUCH-PRINTER"))
