"""SPIRE's `agent_path_template`: `{{ .Field }}` fields rendered into an agent's SPIFFE ID path."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from attestors.node.base import InvalidAttestorConfig, NodeAttestationFailed
from hallmark.errors import InvalidSpiffeId
from hallmark.spiffeid import validate_path

FIELD = re.compile(r"\{\{\s*\.([A-Za-z]+)\s*\}\}")
DOTTED_FIELD = re.compile(r"\{\{\s*\.([A-Za-z.]+)\s*\}\}")  # x509pop's Subject.CommonName, ...


def check_fields(template: object, known: Collection[str]) -> str:
    """The template, if it is text naming only `known` fields; else invalid_agent_path_template."""
    if not isinstance(template, str) or not all(n in known for n in FIELD.findall(template)):
        raise InvalidAttestorConfig(
            f"agent_path_template may use {', '.join(sorted(known))}",
            code="invalid_agent_path_template",
        )
    return template


def render(template: str, values: Mapping[str, str], *, field: re.Pattern[str] = FIELD) -> str:
    """The agent's path: each field's value (empty when unknown), outer slashes trimmed; a path
    that is not a valid SPIFFE ID path is refused (invalid_agent_path)."""
    path = field.sub(lambda m: values.get(m.group(1), ""), template).strip("/")
    try:
        validate_path("/" + path)  # "/" alone (an empty path) has an empty segment: refused
    except InvalidSpiffeId as exc:
        raise NodeAttestationFailed(
            f"agent_path_template gives {path!r}, not a valid SPIFFE ID path",
            code="invalid_agent_path",
        ) from exc
    return path
