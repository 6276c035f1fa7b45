"""The node attestor catalog: every type by name, and refusals with stable codes."""

from __future__ import annotations

import pytest

from attestors.node import aws_iid, catalog, join_token, k8s_psat
from attestors.node.base import InvalidAttestationPayload, InvalidAttestorConfig


def test_each_type_is_served_by_its_own_server_half() -> None:
    for name, server in catalog.SERVER_ATTESTORS.items():
        assert server.type == name
    assert catalog.server_attestor_class("aws_iid") is aws_iid.AwsIidServer
    assert catalog.server_attestor_class("join_token") is join_token.JoinTokenServer


def test_an_unknown_type_is_refused_naming_the_available_ones() -> None:
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.server_attestor_class("tpm_magic")
    assert refused.value.code == "unsupported_attestation_type"
    assert "x509pop" in refused.value.detail and "tpm_magic" in refused.value.detail


def test_join_token_takes_no_configuration_and_others_are_validated_by_their_type() -> None:
    with pytest.raises(InvalidAttestorConfig) as always_on:
        catalog.validate_config("join_token", {})
    assert always_on.value.code == "attestor_always_on"
    with pytest.raises(InvalidAttestorConfig) as unknown:
        catalog.validate_config("x509pop", {"no_such_setting": 1})
    assert unknown.value.code == "unknown_setting"
    with pytest.raises(InvalidAttestorConfig) as missing:
        catalog.validate_config("x509pop", {})
    assert missing.value.code == "missing_setting"


def test_the_agent_half_is_built_from_its_table_and_an_unknown_table_is_refused() -> None:
    built = catalog.agent_attestor("k8s_psat", {"cluster": "prod", "token_path": "/t"})
    assert isinstance(built, k8s_psat.K8sPsatAgent)
    assert (built.cluster, built.token_path) == ("prod", "/t")
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.agent_attestor("join_token", {})
    assert refused.value.code == "unsupported_attestation_type"
    assert "join_token setting" in refused.value.detail


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ("not an object", "invalid_config"),
        (["ca_bundle_pem"], "invalid_config"),
    ],
)
def test_a_config_that_is_not_an_object_is_refused(config: object, code: str) -> None:
    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config("x509pop", config)  # type: ignore[arg-type]
    assert refused.value.code == code


@pytest.mark.parametrize(
    "allow_list",
    ["123456789012", ["123456789012", ""], ["123456789012", 7], {"123456789012": True}],
)
def test_a_list_setting_must_be_a_list_of_non_empty_strings(allow_list: object) -> None:
    from tests.fakes.aws import AwsSigner

    with pytest.raises(InvalidAttestorConfig) as refused:
        catalog.validate_config(
            "aws_iid",
            {"aws_certificates_pem": AwsSigner().pem, "account_allow_list": allow_list},
        )
    assert refused.value.code == "invalid_setting"
    assert "account_allow_list" in refused.value.detail


def test_an_attestor_without_challenges_refuses_to_answer_one() -> None:
    agent = catalog.agent_attestor("k8s_psat", {"cluster": "prod"})
    with pytest.raises(InvalidAttestationPayload) as refused:
        agent.respond(b"a challenge")
    assert "does not answer challenges" in refused.value.detail
