"""`hallmark token|agent|bundle|federation|localauthority` against a real `hallmark up`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.cli.conftest import CliTenant, Hallmark, unique
from tests.e2e.conftest import ControlPlaneProcess, wait_for

pytestmark = [pytest.mark.e2e]


def test_token_generate_then_agent_list_show_ban_evict(
    hallmark: Hallmark,
    cli_a: CliTenant,
    cli_b: CliTenant,
    control_plane: ControlPlaneProcess,
    tmp_path: Path,
) -> None:
    # given a join token and the trust bundle, both from the CLI
    generated = hallmark(cli_b.token, "token", "generate", "-ttl", "300", "-output", "json")
    assert generated.code == 0, generated.err
    token = generated.json()["token"]
    bundle = hallmark(cli_b.token, "bundle", "show", "-format", "spiffe")
    (tmp_path / "bundle.json").write_text(bundle.out)
    # when an agent attests with them
    agent, _ = control_plane.start_agent(
        cli_b.trust_domain,
        token,
        tmp_path / "agent",
        "--trust-bundle",
        str(tmp_path / "bundle.json"),
    )
    # (Hallmark names the agent by the join token's id, never by its secret)
    agent_id = cli_b.id(f"spire/agent/join_token/{generated.json()['id']}")

    def listed() -> list[dict[str, object]]:
        run = hallmark(cli_b.token, "agent", "list", "-output", "json")
        return list(run.json()["agents"])

    wait_for(listed, 60, "the agent to attest")
    try:
        # then list and show print it as spire-server does
        listing = hallmark(cli_b.token, "agent", "list")
        assert listing.out.startswith("Found 1 attested agent:\n\n")
        assert f"SPIFFE ID         : {agent_id}" in listing.out
        assert "Attestation type  : join_token" in listing.out
        assert "Can re-attest     : true" in listing.out
        shown = hallmark(cli_b.token, "agent", "show", "-spiffeID", agent_id, "-output", "json")
        assert shown.json()["spiffe_id"] == agent_id and shown.json()["banned"] is False
        # and another tenant can neither see nor ban it
        assert hallmark(cli_a.token, "agent", "list").out == "No attested agents found\n"
        foreign = hallmark(cli_a.token, "agent", "ban", "-spiffeID", agent_id)
        assert foreign.code == 1 and "not_found" in foreign.err
        # when it is banned, then evicted
        banned = hallmark(cli_b.token, "agent", "ban", "-spiffeID", agent_id)
        assert (banned.code, banned.out) == (0, "Agent banned successfully\n")
        after_ban = hallmark(cli_b.token, "agent", "show", "-spiffeID", agent_id)
        assert "Banned            : true" in after_ban.out
        assert "Can re-attest     : false" in after_ban.out
        evicted = hallmark(cli_b.token, "agent", "evict", "-spiffeID", agent_id)
        assert (evicted.code, evicted.out) == (0, "Agent evicted successfully\n")
        # then it is gone
        assert hallmark(cli_b.token, "agent", "list").out == "No attested agents found\n"
        gone = hallmark(cli_b.token, "agent", "show", "-spiffeID", agent_id, "-output", "json")
        assert gone.code == 1 and gone.error()["code"] == "not_found"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_token_generate_with_spiffe_id_and_bad_ttl(hallmark: Hallmark, cli_a: CliTenant) -> None:
    alias = cli_a.id(unique("node"))
    made = hallmark(cli_a.token, "token", "generate", "-spiffeID", alias, "-output", "json")
    assert made.code == 0 and made.json()["spiffe_id"] == alias and made.json()["token"]
    pretty = hallmark(cli_a.token, "token", "generate")
    assert pretty.code == 0 and pretty.out.startswith("Token: ") and len(pretty.out) > 20
    bad = hallmark(cli_a.token, "token", "generate", "-spiffeID", "not-an-id")
    assert bad.code == 1 and "invalid_spiffe_id" in bad.err
    assert hallmark(cli_a.token, "token", "generate", "-ttl", "0").code == 2


def test_bundle_show_set_list_delete(
    hallmark: Hallmark, cli_a: CliTenant, cli_b: CliTenant, tmp_path: Path
) -> None:
    # given tenant B's bundle, as PEM and as SPIFFE JSON
    pem = hallmark(cli_b.token, "bundle", "show")
    assert pem.code == 0 and pem.out.startswith("-----BEGIN CERTIFICATE-----")
    spiffe = hallmark(cli_b.token, "bundle", "show", "-format", "spiffe")
    assert {key["use"] for key in json.loads(spiffe.out)["keys"]} == {"x509-svid", "jwt-svid"}
    (tmp_path / "b.pem").write_text(pem.out)
    # when tenant A sets it as a federated bundle (SPIRE's `bundle set -id -path`)
    done = hallmark(
        cli_a.token, "bundle", "set", "-id", f"spiffe://{cli_b.trust_domain}",
        "-path", str(tmp_path / "b.pem"),
    )  # fmt: skip
    assert (done.code, done.out) == (0, "bundle set.\n"), done.err
    # then `bundle list` prints it under its trust domain, as set
    listed = hallmark(cli_a.token, "bundle", "list", "-id", cli_b.trust_domain)
    assert listed.out.startswith(f"{'*' * 40}\n* spiffe://{cli_b.trust_domain}\n{'*' * 40}\n")
    assert pem.out.strip() in listed.out
    # when set again from SPIFFE JSON on stdin, it replaces the bundle
    again = hallmark(
        cli_a.token, "bundle", "set", "-id", cli_b.trust_domain, "-format", "spiffe",
        stdin=spiffe.out,
    )  # fmt: skip
    assert again.code == 0, again.err
    as_json = hallmark(cli_a.token, "bundle", "list", "-output", "json").json()["bundles"]
    [held] = [b for b in as_json if b["trust_domain"] == cli_b.trust_domain]
    assert held["bundle"]["keys"] == json.loads(spiffe.out)["keys"]
    # and tenant B sees nothing of it
    assert cli_b.trust_domain not in hallmark(cli_b.token, "bundle", "list").out
    # when deleted, it is gone
    deleted = hallmark(cli_a.token, "bundle", "delete", "-id", cli_b.trust_domain)
    assert (deleted.code, deleted.out) == (0, "bundle deleted.\n")
    assert cli_b.trust_domain not in hallmark(cli_a.token, "bundle", "list").out


def test_bundle_errors_exit_1_or_2_with_a_reason(
    hallmark: Hallmark, cli_a: CliTenant, tmp_path: Path
) -> None:
    (tmp_path / "junk.pem").write_text("no certificate here")
    bad_pem = hallmark(
        cli_a.token, "bundle", "set", "-id", "junk.example", "-path", str(tmp_path / "junk.pem")
    )
    assert bad_pem.code == 2 and "use -format spiffe for JSON" in bad_pem.err
    no_keys = hallmark(
        cli_a.token, "bundle", "set", "-id", "junk.example", "-format", "spiffe",
        stdin='{"keys": []}',
    )  # fmt: skip
    assert no_keys.code == 1 and "invalid_bundle" in no_keys.err
    unknown = hallmark(cli_a.token, "bundle", "delete", "-id", "never.example")
    assert unknown.code == 1 and "not_found" in unknown.err
    # a bundle refreshed from an endpoint is the federation command's to end
    assert hallmark(
        cli_a.token, "federation", "create", "-trustDomain", "endpoint.example",
        "-bundleEndpointURL", "https://endpoint.example/bundle",
    ).code == 0  # fmt: skip
    kept = hallmark(cli_a.token, "bundle", "delete", "-id", "endpoint.example")
    assert kept.code == 1 and "bundle_has_endpoint" in kept.err
    assert "hallmark federation delete -id endpoint.example" in kept.err
    assert hallmark(cli_a.token, "federation", "delete", "-id", "endpoint.example").code == 0


def test_federation_create_list_show_update_delete(
    hallmark: Hallmark, cli_a: CliTenant, cli_b: CliTenant, tmp_path: Path
) -> None:
    # given B's bundle as a file
    (tmp_path / "b.json").write_text(
        hallmark(cli_b.token, "bundle", "show", "-format", "spiffe").out
    )
    server = cli_b.id("spire/server")
    # when A federates with B over https_spiffe, with B's bundle to start from
    created = hallmark(
        cli_a.token, "federation", "create",
        "-trustDomain", cli_b.trust_domain,
        "-bundleEndpointURL", "https://bundles.example:8443",
        "-bundleEndpointProfile", "https_spiffe",
        "-endpointSpiffeID", server,
        "-trustDomainBundlePath", str(tmp_path / "b.json"),
        "-trustDomainBundleFormat", "spiffe",
    )  # fmt: skip
    # then it is stored and printed as SPIRE prints a relationship
    assert created.code == 0, created.err
    for line in (
        f"Trust domain              : {cli_b.trust_domain}",
        "Bundle endpoint URL       : https://bundles.example:8443",
        "Bundle endpoint profile   : https_spiffe",
        f"Endpoint SPIFFE ID        : {server}",
    ):
        assert line in created.out
    listed = hallmark(cli_a.token, "federation", "list")
    assert listed.out.startswith("Found ") and f": {cli_b.trust_domain}\n" in listed.out
    shown = hallmark(
        cli_a.token, "federation", "show", "-id", cli_b.trust_domain, "-output", "json"
    )
    assert shown.json()["bundle"]["keys"]
    # and B's side shows nothing of it
    assert cli_b.trust_domain not in hallmark(cli_b.token, "federation", "list").out
    # when it is updated to https_web
    updated = hallmark(
        cli_a.token, "federation", "update", "-trustDomain", cli_b.trust_domain,
        "-bundleEndpointProfile", "https_web", "-bundleEndpointURL", "https://b.example/bundle",
    )  # fmt: skip
    assert updated.code == 0, updated.err
    assert "Bundle endpoint profile   : https_web" in updated.out
    # then delete ends it
    deleted = hallmark(cli_a.token, "federation", "delete", "-trustDomain", cli_b.trust_domain)
    assert (deleted.code, deleted.out) == (0, "federation relationship deleted.\n")
    gone = hallmark(cli_a.token, "federation", "show", "-id", cli_b.trust_domain)
    assert gone.code == 1 and "not_found" in gone.err


def test_federation_errors_carry_the_apis_codes(hallmark: Hallmark, cli_a: CliTenant) -> None:
    no_id = hallmark(
        cli_a.token, "federation", "create", "-trustDomain", "spiffe-less.example",
        "-bundleEndpointURL", "https://x.example", "-bundleEndpointProfile", "https_spiffe",
    )  # fmt: skip
    assert no_id.code == 1 and "invalid_profile" in no_id.err
    itself = hallmark(
        cli_a.token, "federation", "create", "-trustDomain", cli_a.trust_domain,
        "-bundleEndpointURL", "https://x.example", "-output", "json",
    )  # fmt: skip
    assert itself.code == 1 and itself.error()["code"] == "self_federation"
    assert hallmark(cli_a.token, "federation", "create", "-trustDomain", "a.example").code == 2
    assert hallmark(cli_a.token, "federation", "show").code == 2


def test_localauthority_show_prepare_activate_taint_revoke(
    hallmark: Hallmark, cli_a: CliTenant
) -> None:
    def journal(kind: str) -> dict[str, list[dict[str, object]]]:
        run = hallmark(cli_a.token, "localauthority", kind, "show", "-output", "json")
        assert run.code == 0, run.err
        return dict(run.json())

    # given the X.509 journal: one active authority
    shown = hallmark(cli_a.token, "localauthority", "x509", "show")
    assert shown.out.startswith("Active X.509 authority:\n  Authority ID: ")
    [first] = journal("x509")["active"]
    # when a new one is prepared, then activated
    prepared = hallmark(cli_a.token, "localauthority", "x509", "prepare", "-output", "json")
    assert prepared.code == 0, prepared.err
    new = prepared.json()
    assert new["status"] == "prepared"
    activated = hallmark(
        cli_a.token, "localauthority", "x509", "activate", "-authorityID", str(new["id"])
    )
    assert activated.out.startswith(f"Activated X.509 authority:\n  Authority ID: {new['id']}\n")
    # then the first is old; taint and revoke it
    assert [a["id"] for a in journal("x509")["old"]] == [first["id"]]
    tainted = hallmark(
        cli_a.token, "localauthority", "x509", "taint", "-authorityID", str(first["id"])
    )
    assert tainted.code == 0 and "Tainted: true" in tainted.out
    revoked = hallmark(
        cli_a.token, "localauthority", "x509", "revoke", "-authorityID", str(first["id"])
    )
    assert revoked.code == 0 and revoked.out.startswith("Revoked X.509 authority:")
    assert journal("x509")["old"] == []  # a revoked authority leaves the journal's list
    # and JWT keys are shown and prepared the same way
    jwt = hallmark(cli_a.token, "localauthority", "jwt", "prepare")
    assert jwt.out.startswith("Prepared JWT authority:\n  Authority ID: ")
    assert len(journal("jwt")["prepared"]) == 1


def test_localauthority_errors(hallmark: Hallmark, cli_a: CliTenant) -> None:
    [active] = hallmark(cli_a.token, "localauthority", "x509", "show", "-output", "json").json()[
        "active"
    ]
    # revoking the active authority is refused by the API: exit 1 with its code
    refused = hallmark(
        cli_a.token, "localauthority", "x509", "revoke", "-authorityID", str(active["id"])
    )
    assert refused.code == 1 and "authority_not_tainted" in refused.err
    missing = hallmark(
        cli_a.token, "localauthority", "jwt", "taint",
        "-authorityID", "00000000-0000-0000-0000-000000000000",
    )  # fmt: skip
    assert missing.code == 1 and "not_found" in missing.err
    assert hallmark(cli_a.token, "localauthority", "x509", "activate").code == 2
