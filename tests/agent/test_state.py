"""An SVID's renewal time is half its lifetime from issue, ±10% jitter, as SPIRE renews."""

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from agent.state import RENEWAL_JITTER, X509Svid, renewal_jitter
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


def _share_of_life(svid: X509Svid, now: dt.datetime, ttl: dt.timedelta) -> float:
    return (svid.renew_at - now) / ttl


def test_a_short_svid_renews_at_half_its_life_not_at_once_despite_the_backdate() -> None:
    now = utcnow().replace(microsecond=0)
    svid = _svid(dt.timedelta(seconds=10), now)
    assert svid.not_before == now - BACKDATE  # the server backdates against clock skew
    assert 0.45 <= _share_of_life(svid, now, dt.timedelta(seconds=10)) <= 0.55


def test_an_hour_long_svid_renews_after_about_half_an_hour() -> None:
    now = utcnow().replace(microsecond=0)
    svid = _svid(dt.timedelta(hours=1), now)
    assert now + dt.timedelta(minutes=27) <= svid.renew_at <= now + dt.timedelta(minutes=33)


def test_renewal_jitter_is_stable_for_one_svid_and_spreads_svids_issued_together() -> None:
    # given many SVIDs issued at the same instant with the same lifetime
    now = utcnow().replace(microsecond=0)
    ttl = dt.timedelta(hours=1)
    svids = [_svid(ttl, now) for _ in range(40)]

    # then each answers the same renewal time every time it is asked
    assert all(s.renew_at == s.renew_at for s in svids)
    # and together they spread over the ±10% window around half-life, on both sides
    shares = sorted(_share_of_life(s, now, ttl) for s in svids)
    assert 0.45 <= shares[0] < 0.49 and 0.51 < shares[-1] <= 0.55
    assert len({s.renew_at for s in svids}) > 30


def test_renewal_jitter_covers_the_whole_window_and_no_more() -> None:
    values = [renewal_jitter(serial) for serial in range(1, 5001)]
    assert -RENEWAL_JITTER <= min(values) < -0.09 and 0.09 < max(values) <= RENEWAL_JITTER
    assert abs(sum(values) / len(values)) < 0.01  # centred on half-life
