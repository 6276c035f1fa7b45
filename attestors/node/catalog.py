"""The node attestor catalog: each type's server half and agent half, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attestors.node import (
    aws_iid,
    azure_msi,
    gcp_iit,
    join_token,
    k8s_psat,
    sshpop,
    tpm_devid,
    x509pop,
)
from attestors.node.base import AgentAttestor, InvalidAttestorConfig, ServerAttestor

SERVER_ATTESTORS: dict[str, type[ServerAttestor]] = {
    join_token.ATTESTATION_TYPE: join_token.JoinTokenServer,
    x509pop.ATTESTATION_TYPE: x509pop.X509PopServer,
    k8s_psat.ATTESTATION_TYPE: k8s_psat.K8sPsatServer,
    aws_iid.ATTESTATION_TYPE: aws_iid.AwsIidServer,
    gcp_iit.ATTESTATION_TYPE: gcp_iit.GcpIitServer,
    azure_msi.ATTESTATION_TYPE: azure_msi.AzureMsiServer,
    sshpop.ATTESTATION_TYPE: sshpop.SshPopServer,
    tpm_devid.ATTESTATION_TYPE: tpm_devid.TpmDevidServer,
}

AGENT_ATTESTORS: dict[str, Callable[[Mapping[str, Any]], AgentAttestor]] = {
    x509pop.ATTESTATION_TYPE: x509pop.X509PopAgent.from_settings,
    k8s_psat.ATTESTATION_TYPE: k8s_psat.K8sPsatAgent.from_settings,
    aws_iid.ATTESTATION_TYPE: aws_iid.AwsIidAgent.from_settings,
    gcp_iit.ATTESTATION_TYPE: gcp_iit.GcpIitAgent.from_settings,
    azure_msi.ATTESTATION_TYPE: azure_msi.AzureMsiAgent.from_settings,
    sshpop.ATTESTATION_TYPE: sshpop.SshPopAgent.from_settings,
    tpm_devid.ATTESTATION_TYPE: tpm_devid.TpmDevidAgent.from_settings,
}

# The types DESIGN.md names for tenant configuration (join_token is always on, unconfigured).
CONFIGURABLE_TYPES = (
    "x509pop",
    "k8s_psat",
    "aws_iid",
    "gcp_iit",
    "azure_msi",
    "sshpop",
    "tpm_devid",
)
ALWAYS_ON = (join_token.ATTESTATION_TYPE,)


def server_attestor_class(attestation_type: str) -> type[ServerAttestor]:
    try:
        return SERVER_ATTESTORS[attestation_type]
    except KeyError:
        raise InvalidAttestorConfig(
            f"node attestor type {attestation_type!r} is not available; available: "
            f"{', '.join(sorted(SERVER_ATTESTORS))}",
            code="unsupported_attestation_type",
        ) from None


def validate_config(attestation_type: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A tenant's configuration for `attestation_type`, normalised, or InvalidAttestorConfig."""
    if attestation_type in ALWAYS_ON:
        raise InvalidAttestorConfig(
            f"{attestation_type} is always on and takes no configuration",
            code="attestor_always_on",
        )
    return server_attestor_class(attestation_type).validate_config(config)


def agent_attestor(attestation_type: str, settings: Mapping[str, Any]) -> AgentAttestor:
    """The agent half configured by the `[node_attestor.<type>]` table of agent.toml."""
    try:
        build = AGENT_ATTESTORS[attestation_type]
    except KeyError:
        raise InvalidAttestorConfig(
            f"[node_attestor.{attestation_type}] is not a node attestor this agent has; "
            f"available: join_token (join_token setting), {', '.join(sorted(AGENT_ATTESTORS))}",
            code="unsupported_attestation_type",
        ) from None
    return build(settings)
