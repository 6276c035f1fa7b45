"""The ClientHello peek (hallmark.clienthello): real ClientHellos, cut and mangled ones, fuzz.

Every input gives a name or a marker, never an exception: the relay runs this on bytes any
stranger sends, before TLS.
"""

from __future__ import annotations

import ssl

from hypothesis import given
from hypothesis import strategies as st

from hallmark import clienthello
from hallmark.clienthello import NEED_MORE, NOT_A_NAME, NOT_TLS, UNKNOWN, server_name
from tests.hallmark.fuzzing import FUZZ

MARKERS = {NEED_MORE, NOT_TLS, UNKNOWN, NOT_A_NAME}


def client_hello(name: str | None, *, alpn: bool = True) -> bytes:
    """The first flight of a real TLS client (Python's ssl) naming `name` by SNI."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


HELLO = client_hello("agents.example.org")


def test_the_server_name_of_a_real_client_hello_is_read_lower_cased() -> None:
    assert server_name(HELLO) == "agents.example.org"
    assert server_name(client_hello("Tenant-A.Example")) == "tenant-a.example"
    assert server_name(client_hello("b.test", alpn=False)) == "b.test"


def test_a_client_hello_without_a_server_name_answers_an_empty_name() -> None:
    assert server_name(client_hello(None)) == ""


def test_a_client_hello_cut_short_asks_for_more() -> None:
    for end in (0, 1, 2, 4, 5, 6, 50, len(HELLO) - 1):
        assert server_name(HELLO[:end]) == NEED_MORE, end


def test_bytes_that_are_no_tls_handshake_are_said_so() -> None:
    assert server_name(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == NOT_TLS
    assert server_name(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == NOT_TLS
    assert server_name(b"\x15\x03\x03\x00\x02\x02\x28") == NOT_TLS  # an alert record
    assert server_name(b"\x16\x03\x01\x00\x00") == NOT_TLS  # an empty record
    # a record whose ClientHello says it is longer than itself, inside the record, is broken
    broken = bytearray(HELLO)
    broken[9 + 2 + 32] = 0xFF  # the session id's length runs past the hello
    assert server_name(bytes(broken)) == NOT_TLS


def test_a_client_hello_going_on_in_a_second_record_is_left_to_the_full_handshake() -> None:
    # the handshake message claims more than the first record holds (a huge ClientHello)
    longer = bytearray(HELLO)
    longer[6:9] = (len(HELLO) * 2).to_bytes(3, "big")
    assert server_name(bytes(longer)) == UNKNOWN


def test_a_name_with_bytes_outside_ascii_is_no_name() -> None:
    name = b"agents.example.org"
    at = HELLO.index(name)
    mangled = HELLO[:at] + b"\xc3\xa9gents.example.org"[: len(name)] + HELLO[at + len(name) :]
    assert server_name(mangled) == NOT_A_NAME
    control = HELLO[:at] + b"agents\x00example.org" + HELLO[at + len(name) :]
    assert server_name(control) == NOT_A_NAME


def test_the_refusal_is_a_fatal_unrecognized_name_alert() -> None:
    level, description = clienthello.UNRECOGNIZED_NAME_ALERT[-2:]
    assert clienthello.UNRECOGNIZED_NAME_ALERT[:1] == b"\x15"  # content type alert
    assert (level, description) == (2, ssl.AlertDescription.ALERT_DESCRIPTION_UNRECOGNIZED_NAME)


def _checked(data: bytes) -> None:
    answer = server_name(data)
    assert isinstance(answer, str)
    if answer not in MARKERS:
        assert answer == answer.lower() and (answer == "" or answer.isprintable())
        assert answer.isascii()


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_a_name_or_a_marker(data: bytes) -> None:
    _checked(data)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(HELLO)),
)
def test_a_mangled_real_client_hello_gives_a_name_or_a_marker(
    changes: list[tuple[int, int]], end: int
) -> None:
    data = bytearray(HELLO)
    for at, value in changes:
        data[at] = value
    _checked(bytes(data[:end]) if end else bytes(data))
