"""SPIRE's agent_path_template, checked at configuration and rendered at attestation."""

from __future__ import annotations

import pytest

from attestors.node import agentpath
from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed

KNOWN = ("AccountID", "InstanceID")


@pytest.mark.parametrize(
    "template",
    [None, 42, ["{{ .InstanceID }}"], "{{ .Secret }}", "{{ .InstanceID }}/{{ .Region }}"],
    ids=["none", "number", "list", "unknown-field", "one-unknown-of-two"],
)
def test_a_template_that_is_not_text_or_names_an_unknown_field_is_refused(template):
    with pytest.raises(InvalidAttestorConfig) as refused:
        agentpath.check_fields(template, KNOWN)

    assert refused.value.code == "invalid_agent_path_template"
    assert "AccountID, InstanceID" in str(refused.value)


def test_a_template_of_known_fields_is_kept_as_written():
    template = "aws/{{ .AccountID }}/{{.InstanceID}}"

    assert agentpath.check_fields(template, KNOWN) == template
    assert agentpath.check_fields("static/path", KNOWN) == "static/path"


def test_rendering_fills_the_fields_and_trims_outer_slashes():
    values = {"AccountID": "123456789012", "InstanceID": "i-0abc"}

    assert agentpath.render("/aws/{{ .AccountID }}/{{ .InstanceID }}/", values) == (
        "aws/123456789012/i-0abc"
    )


@pytest.mark.parametrize(
    ("template", "values"),
    [
        ("{{ .InstanceID }}", {}),
        ("/{{ .InstanceID }}/", {"InstanceID": ""}),
        ("aws/{{ .InstanceID }}", {"InstanceID": "../etc"}),
        ("aws/{{ .InstanceID }}", {"InstanceID": "a b"}),
        ("aws//{{ .InstanceID }}", {"InstanceID": "i-1"}),
    ],
    ids=["unknown-value-empty", "empty", "dot-dot-slash", "space", "empty-segment"],
)
def test_a_rendered_path_that_is_not_a_spiffe_id_path_is_refused(template, values):
    with pytest.raises(NodeAttestationFailed) as refused:
        agentpath.render(template, values)

    assert refused.value.code == "invalid_agent_path"
