"""Network UPS Tools: ask upsd over TCP with NUT's own Python client (PyPI ``pynutclient``, module PyNUTClient).

Why this client: it is the one the NUT project ships and releases with NUT
itself (2.8.x), it speaks the plain upsd protocol (``LIST VAR``, ``SET VAR``,
``INSTCMD``) over a socket with a timeout, and needs nothing else. Its errors
(``PyNUTError``, socket errors, EOF) become :class:`PowerSourceError` here and
nowhere else. A lost connection is opened again at the next read.

NUT's ``ups.status`` is a list of flags: ``OL`` on line, ``OB`` on battery,
``LB`` low battery, ``FSD`` forced shutdown (the primary upsmon decided), plus
others (``CHRG``, ``RB``...) kept in the raw status.
"""

from __future__ import annotations

import contextlib
import socket

from PyNUTClient.PyNUT import PyNUTClient, PyNUTError

from .reading import PowerSourceError, UpsReading

_ERRORS = (PyNUTError, OSError, EOFError, socket.timeout, UnicodeDecodeError, ValueError)


def _int(value: str | None) -> int:
    try:
        return int(float(value)) if value not in (None, "") else -1
    except ValueError:
        return -1


def reading_from_vars(variables: dict[str, str]) -> UpsReading:
    """An :class:`UpsReading` from upsd's variables (``ups.status``, ``battery.charge``, ``battery.runtime``)."""
    status = variables.get("ups.status", "").strip()
    if not status:
        raise PowerSourceError("upsd gave no ups.status (driver not connected to the UPS?)")
    flags = set(status.split())
    if "WAIT" in flags or not flags & {"OL", "OB"}:
        raise PowerSourceError(f"ups.status {status!r}: the driver does not know the mains state")
    return UpsReading(on_battery="OB" in flags, low_battery="LB" in flags, forced_shutdown="FSD" in flags,
                      charge_percent=_int(variables.get("battery.charge")),
                      runtime_seconds=_int(variables.get("battery.runtime")), status=status)


class _EofGuard:
    """The client's socket, with end-of-file made an error.

    PyNUTClient reads ``recv`` in a loop until it sees the end marker and does
    not check for end-of-file: if upsd dies mid-answer, ``recv`` returns b""
    for ever and the loop never ends. This wrapper turns b"" into EOFError, so
    a dead upsd is a :class:`PowerSourceError` like any other.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        if not data:
            raise EOFError("upsd closed the connection")
        return data

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


class NutSource:
    """One UPS known to one upsd."""

    def __init__(self, ups: str, host: str = "127.0.0.1", port: int = 3493, *, login: str | None = None,
                 password: str | None = None, timeout: float = 3.0) -> None:
        self.ups, self.host, self.port = ups, host, port
        self.login, self.password, self.timeout = login, password, timeout
        self.name = f"nut:{ups}@{host}:{port}"
        self._client: PyNUTClient | None = None

    def _connected(self) -> PyNUTClient:
        if self._client is None:
            try:
                self._client = PyNUTClient(host=self.host, port=self.port, login=self.login,
                                           password=self.password, timeout=self.timeout)
                sock = self._client._PyNUTClient__srv_handler  # type: ignore[attr-defined]
                self._client._PyNUTClient__srv_handler = _EofGuard(sock)  # type: ignore[attr-defined]
            except _ERRORS as exc:
                raise PowerSourceError(f"{self.name}: cannot connect to upsd: {exc}") from None
        return self._client

    def _vars(self) -> dict[str, str]:
        client = self._connected()
        try:
            raw = client.GetUPSVars(self.ups)
        except _ERRORS as exc:
            self.close()  # open a fresh connection next time
            raise PowerSourceError(f"{self.name}: {exc}") from None
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def read(self) -> UpsReading:
        return reading_from_vars(self._vars())

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(*_ERRORS):
                self._client._PyNUTClient__srv_handler.close()  # type: ignore[attr-defined]
            self._client = None
