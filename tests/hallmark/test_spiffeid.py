"""SPIFFE IDs and trust domain names, validated per SPIFFE-ID.md."""

import pytest

from hallmark.errors import InvalidSpiffeId, InvalidTrustDomain
from hallmark.spiffeid import SpiffeId, TrustDomain


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://example.org/workload",
        "spiffe://example.org",
        "spiffe://ex-ample_1.org/a/b.c/d-e_f",
        "spiffe://example.org/UPPER/case/path/is/ok",
    ],
)
def test_valid_spiffe_ids_parse_and_round_trip(text: str) -> None:
    assert str(SpiffeId.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("spiffe://", "empty trust domain"),
        ("SPIFFE://example.org/w", "uppercase scheme"),
        ("https://example.org/w", "wrong scheme"),
        ("spiffe://Example.org/w", "uppercase trust domain"),
        ("spiffe://example.org:8080/w", "port"),
        ("spiffe://user@example.org/w", "userinfo"),
        ("spiffe://example.org/a/../b", "dot-dot segment"),
        ("spiffe://example.org/a/./b", "dot segment"),
        ("spiffe://example.org//b", "empty segment"),
        ("spiffe://example.org/a/", "trailing slash"),
        ("spiffe://example.org/a%20b", "percent-encoding"),
        ("spiffe://example.org/a?b=c", "query"),
        ("spiffe://example.org/a#frag", "fragment"),
        ("spiffe://exa mple.org/a", "space in trust domain"),
        ("spiffe://example.org/" + "a" * 2048, "longer than 2048 bytes"),
    ],
)
def test_invalid_spiffe_ids_are_rejected(text: str, why: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(text)


@pytest.mark.parametrize(
    "name", ["Example.org", "example.org:443", "a@b", "", "x" * 256, "ex ample"]
)
def test_invalid_trust_domain_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidTrustDomain):
        TrustDomain(name)


def test_trust_domain_id_is_the_bundle_map_key() -> None:
    assert str(TrustDomain("example.org").id) == "spiffe://example.org"


def test_trust_domain_parse_accepts_a_spiffe_uri_without_path() -> None:
    assert TrustDomain.parse("spiffe://example.org") == TrustDomain("example.org")
    with pytest.raises(InvalidTrustDomain):
        TrustDomain.parse("spiffe://example.org/path")


def test_membership_is_by_trust_domain() -> None:
    spiffe_id = SpiffeId.parse("spiffe://example.org/w")
    assert spiffe_id.member_of(TrustDomain("example.org"))
    assert not spiffe_id.member_of(TrustDomain("example.com"))
