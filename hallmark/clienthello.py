"""The server name (SNI) of a TLS ClientHello, read from the bytes before any TLS object exists.

The relay peeks at a new connection's first record and refuses a name that is no tenant's
with a TLS alert, before asyncio's TLS transport, an SSL object or the SNI callback are made
for it: that machinery is most of what an anonymous handshake costs the agent API. Only a
refusal is decided here; a name it lets through still goes through the full handshake and
the SNI callback, which decide again.

`server_name(data)` reads RFC 8446 §4.1.2 / RFC 6066 §3 framing from `data` (the bytes
received so far) and answers one of:
  - `NEED_MORE`: the first record is not complete yet;
  - `NOT_TLS`: the bytes cannot start a TLS handshake (the relay closes the connection);
  - `UNKNOWN`: a ClientHello this parser cannot read the name of (it does not fit in the
    first record, say): the caller falls back to the full handshake;
  - `""`: a ClientHello without a server name;
  - the name, lower-cased (ASCII; a name with other bytes is `NOT_A_NAME`).
Every input gives one of these, never an exception (tests/hallmark/test_clienthello.py).
"""

from __future__ import annotations

from typing import Final

NEED_MORE: Final = "\x00need-more"
NOT_TLS: Final = "\x00not-tls"
UNKNOWN: Final = "\x00unknown"
NOT_A_NAME: Final = "\x00not-a-name"

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME_EXTENSION = 0
_HOST_NAME = 0
_MAX_RECORD = 16384 + 2048  # TLSCiphertext's bound (RFC 8446 §5.2)
MAX_PEEK = 5 + _MAX_RECORD

# A fatal unrecognized_name(112) alert in a TLS 1.2-framed record, as servers answer before
# any keys exist (RFC 8446 §6; RFC 6066 §3).
UNRECOGNIZED_NAME_ALERT: Final = bytes([21, 3, 3, 0, 2, 2, 112])


class _Short(Exception):
    """The ClientHello ends before a field it announces."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise _Short
        part = self.data[self.at : self.at + count]
        self.at += count
        return part

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def done(self) -> bool:
        return self.at >= len(self.data)


def server_name(data: bytes) -> str:
    """The ClientHello's server name, or one of the markers above (see the module doc)."""
    record = _first_record(data)
    if isinstance(record, str):
        return record
    try:
        if record.number(1) != _CLIENT_HELLO:
            return NOT_TLS
        body_length = record.number(3)
        if body_length > len(record.data) - record.at:
            return UNKNOWN  # the ClientHello goes on in the next record
        return _name_of(_Reader(record.take(body_length)))
    except _Short:
        return NOT_TLS


def _first_record(data: bytes) -> _Reader | str:
    """The payload of the first handshake record, or NEED_MORE / NOT_TLS."""
    if len(data) < 5:
        return NEED_MORE if _could_start_tls(data) else NOT_TLS
    length = int.from_bytes(data[3:5], "big")
    if data[0] != _HANDSHAKE or data[1] != 3 or length == 0 or length > _MAX_RECORD:
        return NOT_TLS
    if len(data) < 5 + length:
        return NEED_MORE
    return _Reader(data[5 : 5 + length])


def _could_start_tls(data: bytes) -> bool:
    return (not data or data[0] == _HANDSHAKE) and (len(data) < 2 or data[1] == 3)


def _name_of(hello: _Reader) -> str:
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    if hello.done():
        return ""  # no extensions at all
    extensions = hello.vector(2)
    while not extensions.done():
        kind = extensions.number(2)
        body = extensions.vector(2)
        if kind != _SERVER_NAME_EXTENSION:
            continue
        names = body.vector(2)
        while not names.done():
            name_type = names.number(1)
            name = names.vector(2).data
            if name_type == _HOST_NAME:
                return _decoded(name)
        return ""
    return ""


def _decoded(name: bytes) -> str:
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError:
        return NOT_A_NAME
    if not text or not text.isprintable():
        return NOT_A_NAME
    return text.lower()
