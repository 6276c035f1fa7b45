"""What the Workload API keeps per (snapshot, selectors), and when it stops serving it.

A kept X.509 message is served only until the first SVID in it expires; a kept ValidateJWTSVID
answer only until its token's exp (plus the verifier's leeway).
"""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from agent.state import Entry, EntrySvid, Snapshot, X509Svid
from agent.workload.responses import CallerViews
from agent.workload.server import _ValidatedTokens
from hallmark.bundle import Bundle
from hallmark.jwtsvid import DEFAULT_LEEWAY
from hallmark.protos import workloadapi_pb2
from hallmark.selectors import parse_selectors
from hallmark.signing import LocalSigner
from hallmark.spiffeid import SpiffeId, TrustDomain
from hallmark.x509svid import BACKDATE, LeafRequest, build_leaf, build_signing_certificate, utcnow

TD = TrustDomain("example.org")
SELECTORS = parse_selectors(["unix:uid:1000"])


def _snapshot(now: dt.datetime, ttls: dict[str, dt.timedelta]) -> Snapshot:
    signer = LocalSigner.generate()
    ca = build_signing_certificate(
        trust_domain=TD,
        subject_key=signer.public_key(),
        signer=signer,
        not_before=now - BACKDATE,
        not_after=now + dt.timedelta(days=1),
    )
    entries, svids = {}, {}
    for name, ttl in ttls.items():
        key = ec.generate_private_key(ec.SECP256R1())
        spiffe_id = SpiffeId.parse(f"spiffe://example.org/{name}")
        leaf = build_leaf(
            LeafRequest(spiffe_id, key.public_key(), ttl), ca=ca, signer=signer, now=now
        )
        entries[name] = Entry(name, spiffe_id, "spiffe://example.org/agent", SELECTORS)
        svids[name] = EntrySvid(name, 0, X509Svid((leaf,), key))
    return Snapshot(
        version=7, ready=True, bundle=Bundle(TD, (ca,), ()), entries=entries, svids=svids
    )


def _ids(message: object) -> list[str]:
    assert isinstance(message, workloadapi_pb2.X509SVIDResponse)
    return [svid.spiffe_id for svid in message.svids]


def test_a_kept_x509_message_is_built_once_and_served_only_until_its_first_svid_expires() -> None:
    now = utcnow()
    snapshot = _snapshot(now, {"short": dt.timedelta(minutes=5), "long": dt.timedelta(hours=1)})
    views = CallerViews()
    short_expires = snapshot.svids["short"].svid.not_after

    first, encoded = views.x509(snapshot, SELECTORS, now)
    again, encoded_again = views.x509(snapshot, SELECTORS, short_expires - dt.timedelta(seconds=1))
    later, _ = views.x509(snapshot, SELECTORS, short_expires)

    assert again is first and encoded_again == encoded  # kept, not rebuilt
    assert _ids(first) == ["spiffe://example.org/long", "spiffe://example.org/short"]
    assert _ids(later) == ["spiffe://example.org/long"]  # the expired SVID is gone


def test_views_are_per_selectors_and_bounded() -> None:
    snapshot = _snapshot(utcnow(), {"w": dt.timedelta(hours=1)})
    views = CallerViews(max_views=2)

    mine = views.entries(snapshot, SELECTORS)
    other = views.entries(snapshot, parse_selectors(["unix:uid:1001"]))
    views.entries(snapshot, parse_selectors(["unix:uid:1002"]))

    assert [e.id for e in mine] == ["w"] and other == []
    assert len(views) == 2


def test_a_kept_validation_answer_ends_at_the_tokens_exp_plus_leeway() -> None:
    cache = _ValidatedTokens()
    now = utcnow()
    exp = now.timestamp() + 60
    answer = workloadapi_pb2.ValidateJWTSVIDResponse(spiffe_id="spiffe://example.org/w")
    cache.put("key", {"exp": exp}, answer)
    cache.put("no-exp", {"exp": "soon"}, answer)

    leeway = DEFAULT_LEEWAY.total_seconds()
    just_before = dt.datetime.fromtimestamp(exp + leeway - 1, dt.UTC)
    at_end = dt.datetime.fromtimestamp(exp + leeway, dt.UTC)

    assert cache.get("key", now) is answer
    assert cache.get("key", just_before) is answer
    assert cache.get("key", at_end) is None
    assert cache.get("key", now) is None  # dropped once past its end
    assert cache.get("no-exp", now) is None


def test_views_are_built_once_each_and_the_least_recently_used_goes_first() -> None:
    snapshot = _snapshot(utcnow(), {"w": dt.timedelta(hours=1)})
    views = CallerViews(max_views=2)
    a, b, c = (parse_selectors([f"unix:uid:{uid}"]) for uid in (1000, 1001, 1002))

    views.entries(snapshot, a)
    views.entries(snapshot, b)
    views.entries(snapshot, a)  # a is used again: b is now the least recently used
    assert views.built == 2  # the second ask for a was served from its view
    views.entries(snapshot, c)  # over the bound: b goes

    views.entries(snapshot, a)
    views.entries(snapshot, c)
    assert views.built == 3  # a and c were kept
    views.entries(snapshot, b)
    assert views.built == 4  # b had to be built again


def test_kept_validation_answers_are_bounded_least_recently_used_first() -> None:
    cache = _ValidatedTokens(max_size=2)
    now = utcnow()
    exp = now.timestamp() + 60
    answers = {
        k: workloadapi_pb2.ValidateJWTSVIDResponse(spiffe_id=f"spiffe://example.org/{k}")
        for k in "abc"
    }

    cache.put("a", {"exp": exp}, answers["a"])
    cache.put("b", {"exp": exp}, answers["b"])
    assert cache.get("a", now) is answers["a"]  # a used again: b is the least recently used
    cache.put("c", {"exp": exp}, answers["c"])  # over the bound: b goes

    assert cache.get("a", now) is answers["a"]
    assert cache.get("c", now) is answers["c"]
    assert cache.get("b", now) is None
