"""A virtual contactless card for the vpcd virtual reader: answers GET DATA UID.

Why this exists: a PC/SC contactless reader answers the pseudo-APDU
``FF CA 00 00 00`` (PC/SC part 3, GET DATA) ITSELF with the UID of the card in
its field. The virtual reader ``vpcd`` (Debian ``vsmartcard-vpcd``) is only a
pipe: it hands every APDU to the emulated card behind it. The project's own
emulator ``vicc`` (``vsmartcard-vpicc``) emulates ISO 7816 contact cards and
has no UID; it reads CLA ``FF`` as proprietary secure messaging, cannot answer
(and in version 3.3 the process dies on it). So for technicians without real
cards, and for the test suite, this program plays *the card and the reader's
UID function together*, over vpcd's socket protocol (the same one vicc uses):
each message is a 2-byte big-endian length and a body; a 1-byte body is a
control (0 power off, 1 power on, 2 reset, 4 send the ATR), anything longer
is a command APDU answered with a response APDU. Connected = card in the
field; disconnected = card removed.

Usage (pcscd running with vpcd loaded; its port is CHANNELID in
/etc/reader.conf.d/vpcd, 35963 by default)::

    python -m parkgate.clients.devices.virtual_card --uid 04A1B2C3D4E5F6

then type on standard input: ``remove``, ``insert``, ``uid HEX`` (another card),
``quit``. Each change is printed as one line (``inserted UID``, ``removed``).
``--status 6A81`` makes GET DATA fail with that status word, like a reader that
does not support it for the card type.

APDUs answered: ``FF CA 00 00 Le`` -> UID + 90 00 (6C xx when Le is too
short); ``FF CA 01 00`` -> 6A 81 (no ATS: not an ISO 14443-4 card); other
P1/P2 -> 6B 00; other ``FF`` instructions -> 6D 00; any other class -> 6E 00.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading

#: ATR a PC/SC part 3 reader builds for a MIFARE Classic 1K (storage card, no ISO 14443-4).
DEFAULT_ATR = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
DEFAULT_PORT = 35963

SW_OK = b"\x90\x00"


def answer_apdu(apdu: bytes, uid: bytes, get_data_status: int | None = None) -> bytes:
    """The response APDU a contactless reader with this card in its field would give."""
    if len(apdu) < 4:
        return b"\x67\x00"  # wrong length
    cla, ins, p1, p2 = apdu[:4]
    if cla != 0xFF:
        return b"\x6e\x00"
    if ins != 0xCA:
        return b"\x6d\x00"
    if p1 == 0x01 and p2 == 0x00:
        return b"\x6a\x81"
    if p1 != 0x00 or p2 != 0x00:
        return b"\x6b\x00"
    if get_data_status is not None:
        return get_data_status.to_bytes(2, "big")
    le = apdu[4] if len(apdu) == 5 else 0
    if le and le < len(uid):
        return bytes([0x6C, len(uid)])
    return uid + SW_OK


class VirtualCard:
    """One card presented to one vpcd slot; ``insert``/``remove`` move it in and out of the field."""

    def __init__(
        self,
        uid: bytes,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        atr: bytes = DEFAULT_ATR,
        get_data_status: int | None = None,
    ) -> None:
        if not 4 <= len(uid) <= 10:
            raise ValueError("a contactless UID has 4, 7 or 10 bytes")
        self.uid = uid
        self.host, self.port, self.atr = host, port, atr
        self.get_data_status = get_data_status
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def insert(self) -> None:
        """Connect to vpcd: the reader now sees a card."""
        if self._sock is not None:
            return
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.settimeout(None)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()

    def remove(self) -> None:
        """Disconnect: the reader sees the card leave its field."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                body = _receive(sock)
                if body is None:
                    break
                if len(body) == 1:
                    if body[0] == 4:
                        _send(sock, self.atr)
                    continue  # power on/off and reset need no answer
                _send(sock, answer_apdu(body, self.uid, self.get_data_status))
        except OSError:
            pass
        if self._sock is sock:  # vpcd went away (pcscd stopped): the card is out
            self._sock = None


def _receive(sock: socket.socket) -> bytes | None:
    header = _exactly(sock, 2)
    if header is None:
        return None
    (size,) = struct.unpack("!H", header)
    return _exactly(sock, size) if size else b""


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(sock: socket.socket, body: bytes) -> None:
    sock.sendall(struct.pack("!H", len(body)) + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parkgate.clients.devices.virtual_card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--uid", required=True, help="card UID in hex, 4, 7 or 10 bytes")
    parser.add_argument("--host", default="127.0.0.1", help="where pcscd's vpcd listens")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="vpcd port (CHANNELID)")
    parser.add_argument("--status", help="answer GET DATA with this status word (hex), e.g. 6A81")
    parser.add_argument("--removed", action="store_true", help="start with the card out of the field")
    args = parser.parse_args(argv)
    try:
        card = VirtualCard(
            bytes.fromhex(args.uid),
            host=args.host,
            port=args.port,
            get_data_status=int(args.status, 16) if args.status else None,
        )
        if not args.removed:
            card.insert()
            print(f"inserted {card.uid.hex().upper()}", flush=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc} (is pcscd running with vpcd on {args.host}:{args.port}?)", file=sys.stderr)
        return 1
    for raw in sys.stdin:
        word, _, value = raw.strip().partition(" ")
        try:
            if word == "remove":
                card.remove()
                print("removed", flush=True)
            elif word == "insert":
                card.insert()
                print(f"inserted {card.uid.hex().upper()}", flush=True)
            elif word == "uid":
                card.remove()
                card.uid = bytes.fromhex(value)
                card.insert()
                print(f"inserted {card.uid.hex().upper()}", flush=True)
            elif word == "quit":
                break
            elif word:
                print(f"unknown input {word!r}: remove, insert, uid HEX, quit", flush=True)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", flush=True)
    else:
        # End of input with no terminal: stay in the field until killed.
        if card.inserted:
            threading.Event().wait()
    card.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
