"""Fuzz: CSRs give a P-256/P-384 key or `InvalidSvid`, never another exception."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import CertificateSigningRequestBuilder, Name
from hypothesis import given
from hypothesis import strategies as st

from hallmark.x509svid import make_csr, public_key_from_csr
from tests.hallmark.foreign_keys import private_key
from tests.hallmark.fuzzing import FUZZ, clear_error_or_result

GOOD = make_csr(ec.generate_private_key(ec.SECP256R1()))


def _csr(kind: str) -> bytes:
    builder = CertificateSigningRequestBuilder().subject_name(Name([]))
    key = private_key(kind)
    csr = builder.sign(key, None if kind == "ed25519" else hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


OTHER_KEYS = [_csr(kind) for kind in ("ec-p384", "ec-p521", "rsa-2048", "ed25519", "dsa")]


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_key_or_a_clear_error(data: bytes) -> None:
    clear_error_or_result(lambda: public_key_from_csr(data))


@FUZZ
@given(
    st.sampled_from([GOOD, *OTHER_KEYS]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    st.integers(0, 10_000),
)
def test_a_csr_with_changed_or_cut_bytes_gives_a_key_or_a_clear_error(
    csr: bytes, changes: list[tuple[int, int]], cut: int
) -> None:
    changed = bytearray(csr)
    for index, value in changes:
        changed[index % len(changed)] = value
    for data in (bytes(changed), csr[: cut % (len(csr) + 1)]):
        key = clear_error_or_result(lambda data=data: public_key_from_csr(data))
        if key is not None:
            # only keys the server will certify come out
            assert isinstance(key, ec.EllipticCurvePublicKey)
            assert key.curve.name in ("secp256r1", "secp384r1")
