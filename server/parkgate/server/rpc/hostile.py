"""Hostile input stops at the edge: every string and bytes field of every request, checked from its descriptor.

A protobuf string is any valid UTF-8, NUL bytes and terminal escapes
included, and as long as the message size allows. PostgreSQL refuses NUL in
text, a control character in a user name spoofs log lines and screens, and a
megabyte "park id" is never a mistake. Rather than trusting each servicer to
remember, one walk over the message's descriptor checks every field of every
RPC (new fields and new RPCs included) before a servicer runs, and refuses
with INVALID_ARGUMENT and a reason that names the field.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from parkgate.server.domain.errors import InvalidArgument, Reason

# Fields people type sentences into: line breaks and tabs belong there.
FREE_TEXT_FIELDS = frozenset({"description", "note", "text", "value", "detail", "reason_text", "contact", "summary"})
# Scanned codes: a scanner ends what it read with CR/LF, which the decoder strips.
SCANNED_FIELDS = frozenset({"code"})
MAX_IDENTIFIER_CHARS = 256      # ids, codes, user names, keys
MAX_TEXT_CHARS = 4096           # free text
MAX_BYTES = 4 * 1024 * 1024     # a backstop at the message size; a field's own limit (a photo: 2 MiB) gives its own reason
MAX_REPEATED = 10_000           # items in one repeated field
_LINE_CONTROLS = frozenset("\t\n\r")
# Bidirectional overrides make an identifier read differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_request(message: Any) -> None:
    """Raise InvalidArgument naming the first field that no honest client sends."""
    if isinstance(message, Message):
        _check_message(message, "")


def _check_message(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            _check_map(field, value, path)
        elif field.is_repeated:
            if len(value) > MAX_REPEATED:
                raise InvalidArgument(f"{path}: more than {MAX_REPEATED} items", Reason.TEXT_TOO_LONG)
            for i, item in enumerate(value):
                _check_value(field, item, f"{path}[{i}]")
        else:
            _check_value(field, value, path)


def _check_map(field: FieldDescriptor, value: Any, path: str) -> None:
    if len(value) > MAX_REPEATED:
        raise InvalidArgument(f"{path}: more than {MAX_REPEATED} entries", Reason.TEXT_TOO_LONG)
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    for key, item in value.items():
        _check_value(key_field, key, f"{path}[key]")
        _check_value(value_field, item, f"{path}[{key!r}]")


def _check_value(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        check_text(value, path, free_text=field.name in FREE_TEXT_FIELDS,
                   line_breaks=field.name in FREE_TEXT_FIELDS or field.name in SCANNED_FIELDS)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        if len(value) > MAX_BYTES:
            raise InvalidArgument(f"{path}: more than {MAX_BYTES} bytes", Reason.TEXT_TOO_LONG)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, path + ".")


def check_text(value: str, path: str, *, free_text: bool, line_breaks: bool) -> None:
    """One string: bounded, no NUL, no control characters (line breaks only in free text)."""
    limit = MAX_TEXT_CHARS if free_text else MAX_IDENTIFIER_CHARS
    if len(value) > limit:
        raise InvalidArgument(f"{path}: longer than {limit} characters", Reason.TEXT_TOO_LONG)
    if value.isprintable():  # the common case, in C: no Cc, Cf, Zl, Zp, Cs, Co, Cn at all
        return
    for ch in value:
        if ch == "\x00":
            raise InvalidArgument(f"{path}: contains a NUL character", Reason.TEXT_NOT_ALLOWED)
        if ch in _LINE_CONTROLS:
            if line_breaks:
                continue
            raise InvalidArgument(f"{path}: contains a line break or tab", Reason.TEXT_NOT_ALLOWED)
        category = unicodedata.category(ch)
        if category == "Cc" or ch in _BIDI_CONTROLS or category in ("Zl", "Zp", "Cs"):
            raise InvalidArgument(f"{path}: contains the control character U+{ord(ch):04X}", Reason.TEXT_NOT_ALLOWED)


def printable(value: Any, limit: int = 200) -> Any:
    """``value`` (a JSON-like tree) made safe to store and show whatever the caller sent.

    The operation log records refused calls too, so it must hold what the check
    above refuses: NUL and other control characters become ``\\uXXXX`` text and
    long strings are cut, so writing the record can never fail on the input.
    """
    if isinstance(value, str):
        cut = value if len(value) <= limit else value[:limit] + f"...(+{len(value) - limit} chars)"
        if cut.isprintable():
            return cut
        return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in cut)
    if isinstance(value, dict):
        return {printable(k, limit): printable(v, limit) for k, v in list(value.items())[:200]}
    if isinstance(value, list):
        return [printable(v, limit) for v in value[:200]]
    return value
