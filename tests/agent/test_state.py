"""An SVID's renewal time is half its lifetime from issue, as SPIRE renews."""

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from agent.state import X509Svid
from hallmark.signing import LocalSigner
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import BACKDATE, LeafRequest, build_leaf, build_signing_certificate, utcnow

TD = TrustDomain("example.org")


def _svid(ttl: dt.timedelta, now: dt.datetime) -> X509Svid:
    signer = LocalSigner.generate()
    ca = build_signing_certificate(
        trust_domain=TD,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(days=1),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_leaf(
        LeafRequest(TD.spiffe_id("/w"), key.public_key(), ttl), ca=ca, signer=signer, now=now
    )
    return X509Svid((leaf,), key)


def test_a_short_svid_renews_at_half_its_life_not_at_once_despite_the_backdate() -> None:
    now = utcnow().replace(microsecond=0)
    svid = _svid(dt.timedelta(seconds=10), now)
    assert svid.not_before == now - BACKDATE  # the server backdates against clock skew
    assert svid.renew_at == now + dt.timedelta(seconds=5)


def test_an_hour_long_svid_renews_after_half_an_hour() -> None:
    now = utcnow().replace(microsecond=0)
    assert _svid(dt.timedelta(hours=1), now).renew_at == now + dt.timedelta(minutes=30)
