"""`hallmark federation refresh` against a real `hallmark up`.

It calls POST /api/v1/federation-relationships/{td}/refresh (DESIGN "Federation"), which the
`fed` work builds: these tests pass once it is merged.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli.conftest import CliTenant, Hallmark

pytestmark = [pytest.mark.e2e]

UNREACHABLE = "https://bundle-endpoint.invalid/"  # .invalid never resolves (RFC 6761)


def test_a_failed_refresh_exits_1_with_bundle_endpoint_error_and_keeps_the_bundle(
    hallmark: Hallmark, cli_a: CliTenant, cli_b: CliTenant
) -> None:
    # given a relationship with B whose endpoint cannot be reached, holding B's bundle
    bundle = hallmark(cli_b.token, "bundle", "show", "-format", "spiffe").out
    assert hallmark(
        cli_a.token, "bundle", "set", "-id", cli_b.trust_domain, "-format", "spiffe",
        stdin=bundle,
    ).code == 0  # fmt: skip
    assert hallmark(
        cli_a.token, "federation", "update", "-trustDomain", cli_b.trust_domain,
        "-bundleEndpointURL", UNREACHABLE, "-bundleEndpointProfile", "https_web",
    ).code == 0  # fmt: skip
    try:
        # when it is refreshed now
        refreshed = hallmark(
            cli_a.token, "federation", "refresh", "-id", cli_b.trust_domain, "-output", "json"
        )
        # then the CLI exits 1 with the API's code, and the last good bundle is kept
        assert refreshed.code == 1
        assert refreshed.error() | {"detail": ""} == {
            "code": "bundle_endpoint_error",
            "detail": "",
            "status": 502,
        }
        held = hallmark(cli_a.token, "bundle", "list", "-id", cli_b.trust_domain, "-output", "json")
        assert held.json()["bundles"][0]["bundle"]["keys"] == json.loads(bundle)["keys"]
    finally:
        hallmark(cli_a.token, "federation", "delete", "-id", cli_b.trust_domain)


def test_refresh_of_an_unknown_trust_domain_is_not_found(
    hallmark: Hallmark, cli_a: CliTenant
) -> None:
    run = hallmark(cli_a.token, "federation", "refresh", "-id", "never-federated.example")
    assert run.code == 1 and "not_found" in run.err and "(HTTP 404)" in run.err


def test_refresh_without_a_trust_domain_is_a_usage_error(
    hallmark: Hallmark, cli_a: CliTenant
) -> None:
    run = hallmark(cli_a.token, "federation", "refresh")
    assert run.code == 2 and "-id is required" in run.err
