"""Scanner framing (hypothesis) and the serial scanner on a socat pseudo-terminal pair."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parkgate.clients.devices import (
    DeviceClosed,
    DeviceDisconnected,
    DeviceNotFound,
    DeviceUnavailable,
    Framing,
    ScanProblem,
    SerialScanner,
    SerialSettings,
)
from parkgate.clients.devices.framing import FrameDecoder
from tests.clients.helpers import signed_code
from tests.fixtures.serial import PtyPair

TERMINATOR_BYTES = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "ANY": b"\r\n"}

codes = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=200)
framings = st.builds(
    Framing,
    terminator=st.sampled_from(["CR", "LF", "CRLF", "ANY"]),
    prefix=st.sampled_from(["", "\x02", "]Q1"]),
    suffix=st.sampled_from(["", "\x03", "#"]),
    max_length=st.just(200),
)


def frame(code: str, framing: Framing) -> bytes:
    return (framing.prefix + code + framing.suffix).encode() + TERMINATOR_BYTES[framing.terminator]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None)
@given(framing=framings, sent=st.lists(codes, max_size=8), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_framed_codes_come_out_exactly_however_the_bytes_are_split(
    framing: Framing, sent: list[str], cuts: list[int]
) -> None:
    stream = b"".join(frame(code, framing) for code in sent)
    decoder = FrameDecoder(framing)
    scans = [scan for chunk in chunked(stream, cuts) for scan in decoder.feed(chunk)]
    assert all(scan.ok for scan in scans), scans
    assert [scan.code for scan in scans] == sent


@settings(max_examples=300, deadline=None)
@given(framing=framings, noise=st.binary(max_size=600), code=codes)
def test_noise_never_raises_and_a_good_line_after_it_is_still_read(
    framing: Framing, noise: bytes, code: str
) -> None:
    decoder = FrameDecoder(framing)
    scans = decoder.feed(noise + b"\r\n")
    for scan in scans:
        if scan.ok:
            assert scan.code and all(0x20 <= ord(c) <= 0x7E for c in scan.code)
            assert len(scan.code) <= framing.max_length
        else:
            assert scan.code is None and scan.problem in ScanProblem
    assert decoder.feed(frame(code, framing))[-1].code == code


def test_garbage_overlong_and_bad_framing_are_flagged_and_skipped() -> None:
    decoder = FrameDecoder(Framing(terminator="CR", prefix="\x02", suffix="\x03", max_length=160))
    scans = decoder.feed(
        b"\x02PG:ABC\xff\x03\r"  # a byte outside printable ASCII
        + b"\x02" + b"A" * 400 + b"\x03\r"  # overlong: dropped up to its terminator
        + b"PG:NO-STX\x03\r"  # the configured prefix is missing
        + b"\x02\x03\r"  # nothing between prefix and suffix
        + b"\x02PG:GOOD\x03\r"
    )  # fmt: skip
    assert [s.problem for s in scans] == [
        ScanProblem.GARBAGE,
        ScanProblem.OVERLONG,
        ScanProblem.BAD_FRAME,
        ScanProblem.BAD_FRAME,
        None,
    ]
    assert scans[-1].code == "PG:GOOD"


def test_a_half_line_is_dropped_after_the_frame_timeout_instead_of_glued_to_the_next() -> None:
    decoder = FrameDecoder(Framing(terminator="CR", frame_timeout=0.5))
    assert decoder.feed(b"PG:HALF", now=10.0) == []
    assert decoder.pending
    scans = decoder.feed(b"PG:WHOLE\r", now=11.0)
    assert [(s.problem, s.code) for s in scans] == [(ScanProblem.INCOMPLETE, None), (None, "PG:WHOLE")]


def test_cr_lf_from_a_scanner_set_to_cr_gives_no_empty_or_incomplete_lines() -> None:
    decoder = FrameDecoder(Framing(terminator="CR"))
    assert [s.code for s in decoder.feed(b"A\r\nB\r\n", now=0.0)] == ["A", "B"]
    assert decoder.expire(now=5.0) == []


def test_bad_framing_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Framing(terminator="NUL")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Framing(prefix="\r")
    with pytest.raises(ValueError):
        Framing(max_length=0)


# ---- the serial scanner on a real pseudo-terminal ---------------------------------------------


def test_codes_from_the_port_are_read_without_their_terminator(pty_pair: PtyPair) -> None:
    code = signed_code()
    with SerialScanner(SerialSettings(pty_pair.device), Framing(terminator="CRLF")) as scanner:
        far = pty_pair.open_far()
        far.write(code[:50].encode())
        far.flush()
        time.sleep(0.1)  # the rest arrives later, as from a slow 9600-baud scanner
        far.write(code[50:].encode() + b"\r\n" + b"PG:SECOND\r\n")
        assert scanner.read_code(timeout=5) == code
        assert scanner.read_code(timeout=5) == "PG:SECOND"
        assert scanner.read_code(timeout=0.2) is None


def test_flagged_lines_are_counted_and_skipped(pty_pair: PtyPair) -> None:
    framing = Framing(terminator="CR", prefix="\x02", suffix="\x03", max_length=200)
    with SerialScanner(SerialSettings(pty_pair.device, baudrate=115200), framing) as scanner:
        far = pty_pair.open_far()
        far.write(b"\x02\x00\x01junk\x03\r" + b"\x02" + b"9" * 1000 + b"\x03\r" + b"\x02PG:OK\x03\r")
        assert scanner.read_code(timeout=5) == "PG:OK"
        assert scanner.rejected == 2


def test_read_returns_the_flagged_scan_itself(pty_pair: PtyPair) -> None:
    with SerialScanner(SerialSettings(pty_pair.device)) as scanner:
        pty_pair.open_far().write(b"\xfe\xff\r")
        scan = scanner.read(timeout=5)
        assert scan is not None and scan.problem is ScanProblem.GARBAGE and scan.raw == b"\xfe\xff"


def test_an_unplugged_scanner_is_device_disconnected(pty_pair: PtyPair) -> None:
    with SerialScanner(SerialSettings(pty_pair.device)) as scanner:
        pty_pair.stop()
        with pytest.raises(DeviceDisconnected):
            scanner.read_code(timeout=5)


def test_close_from_another_thread_ends_a_blocked_read(pty_pair: PtyPair) -> None:
    scanner = SerialScanner(SerialSettings(pty_pair.device))
    threading.Timer(0.2, scanner.close).start()
    with pytest.raises(DeviceClosed):
        scanner.read_code()


def test_a_missing_port_is_device_not_found() -> None:
    with pytest.raises(DeviceNotFound):
        SerialScanner(SerialSettings("/dev/ttyNO-SUCH-SCANNER"))


def test_a_port_already_in_use_is_device_unavailable(pty_pair: PtyPair) -> None:
    with SerialScanner(SerialSettings(pty_pair.device)), pytest.raises(DeviceUnavailable):
        SerialScanner(SerialSettings(pty_pair.device))
