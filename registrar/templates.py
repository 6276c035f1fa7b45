"""The ClusterSPIFFEID template language (a Go text/template subset) and label selectors.

Templates read like spire-controller-manager's: `{{ .TrustDomain }}`, `{{ .ClusterName }}`,
`{{ .PodMeta.Namespace }}`, `{{ .PodMeta.UID }}`, `{{ .PodSpec.ServiceAccountName }}`,
`{{ .PodSpec.NodeName }}`, `{{ .PodMeta.Labels.app }}` or `{{ index .PodMeta.Labels "app" }}`.
Go's field names are matched to the Kubernetes JSON names (`Namespace` → `namespace`,
`UID` → `uid`). A field that is missing is an error, never an empty string: an identity is
not minted from a half-rendered template.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Mapping
from typing import Any

ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.DOTALL)


class TemplateError(ValueError):
    """A template that does not parse or names a field the object does not have."""


def _field(value: Any, name: str, path: str) -> Any:
    if isinstance(value, Mapping):
        for key in (name, name[:1].lower() + name[1:], name.lower()):
            if key in value:
                return value[key]
    raise TemplateError(f"{path}: no such field")


def _lookup(context: Mapping[str, Any], path: str) -> Any:
    if not path.startswith("."):
        raise TemplateError(f"{path!r}: only fields (.Name) and index are supported")
    value: Any = context
    for name in path[1:].split("."):
        if not name:
            raise TemplateError(f"{path!r}: empty field name")
        value = _field(value, name, path)
    return value


@functools.lru_cache(maxsize=1024)
def _compile(template: str) -> tuple[str | tuple[str, ...], ...]:
    """A template as its literal text and its actions (each as its words), parsed once: a
    resync renders every template for every pod."""
    parts: list[str | tuple[str, ...]] = []
    position = 0
    for match in ACTION.finditer(template):
        parts.append(template[position : match.start()])
        action = match.group(1)
        try:
            words = tuple(shlex.split(action))
        except ValueError as exc:
            raise TemplateError(f"{{{{ {action} }}}}: {exc}") from exc
        if not (len(words) == 1 or (len(words) == 3 and words[0] == "index")):
            raise TemplateError(f"{{{{ {action} }}}}: only .Field paths and index are supported")
        parts.append(words)
        position = match.end()
    parts.append(template[position:])
    return tuple(parts)


def _evaluate(words: tuple[str, ...], context: Mapping[str, Any]) -> str:
    action = " ".join(words)
    if len(words) == 1:
        value = _lookup(context, words[0])
    else:
        mapping = _lookup(context, words[1])
        if not isinstance(mapping, Mapping) or words[2] not in mapping:
            raise TemplateError(f"{{{{ {action} }}}}: no such key")
        value = mapping[words[2]]
    if isinstance(value, Mapping | list) or value is None:
        raise TemplateError(f"{{{{ {action} }}}}: not a plain value")
    return str(value)


def render(template: str, context: Mapping[str, Any]) -> str:
    return "".join(
        part if isinstance(part, str) else _evaluate(part, context) for part in _compile(template)
    )


def check(template: str) -> None:
    """Raise TemplateError for unbalanced braces (a field error shows only when rendering)."""
    if ACTION.sub("", template).count("{{") or ACTION.sub("", template).count("}}"):
        raise TemplateError(f"{template!r}: unbalanced {{{{ }}}}")
    _compile(template)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector: every matchLabels pair and matchExpression holds; an empty
    (or absent) selector matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key = expression.get("key", "")
        operator = expression.get("operator", "")
        values = expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise TemplateError(f"matchExpressions: unknown operator {operator!r}")
        if not ok:
            return False
    return True


def check_selector(selector: Any) -> None:
    if selector is None:
        return
    if not isinstance(selector, Mapping):
        raise TemplateError("a label selector is an object {matchLabels, matchExpressions}")
    for expression in selector.get("matchExpressions") or []:
        operator = expression.get("operator")
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise TemplateError(f"matchExpressions: unknown operator {operator!r}")
        if operator in ("In", "NotIn") and not expression.get("values"):
            raise TemplateError(f"matchExpressions: {operator} needs values")
