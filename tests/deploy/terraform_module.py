"""deploy/terraform parsed with python-hcl2, and the code facts the tests hold it against.

Terraform and the Kubernetes provider cannot run in the test suite, so the module is read
as data: variables, locals and resources merged across its .tf files.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "terraform"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
ENV_READERS = {
    "env.text",
    "env.optional",
    "env.boolean",
    "env.integer",
    "os.environ.get",
    "os.getenv",
}


@dataclass
class Module:
    """The module's top-level blocks, merged across its .tf files."""

    variables: dict[str, dict[str, Any]]
    locals: dict[str, Any]
    resources: dict[str, dict[str, dict[str, Any]]]
    outputs: dict[str, dict[str, Any]]
    text: str  # every expression, comments dropped: where references are looked for

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[kind][name]


def parse(path: Path) -> dict[str, Any]:
    return hcl2.loads(path.read_text(), serialization_options=OPTIONS)


def load_module(directory: Path = MODULE) -> Module:
    variables: dict[str, dict[str, Any]] = {}
    local_values: dict[str, Any] = {}
    resources: dict[str, dict[str, dict[str, Any]]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    parsed = [parse(path) for path in sorted(directory.glob("*.tf"))]
    for tree in parsed:
        for block in tree.get("variable", []):
            variables.update(block)
        for block in tree.get("locals", []):
            local_values.update(block)
        for block in tree.get("resource", []):
            for kind, named in block.items():
                resources.setdefault(kind, {}).update(named)
        for block in tree.get("output", []):
            outputs.update(block)
    return Module(variables, local_values, resources, outputs, json.dumps(parsed))


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- reading the parsed HCL ---------------------------------------------------------------


def first(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """A nested block that occurs once (hcl2 gives every block as a list)."""
    assert len(blocks) == 1
    return blocks[0]


def process_container(module: Module) -> dict[str, Any]:
    """The container block of the Deployment every long-running process kind shares."""
    spec = first(module.resource("kubernetes_deployment_v1", "process")["spec"])
    return first(first(first(spec["template"])["spec"])["container"])


def dynamic(block: dict[str, Any], label: str) -> dict[str, Any]:
    """The one `dynamic "label"` block inside `block`."""
    return first([d[label] for d in block.get("dynamic", []) if label in d])


def var_name(expression: str) -> str | None:
    """`x` for an expression that is exactly `${var.x}`."""
    match = re.fullmatch(r"\$\{var\.(\w+)\}", expression)
    return match.group(1) if match else None


def render(value: str, module: Module) -> str:
    """Substitute ${local.x}, ${var.x} and ${tostring(var.x)} with their literal values."""

    def lookup(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        value = module.locals[name] if kind == "local" else module.variables[name]["default"]
        return str(value)

    return re.sub(r"\$\{(?:tostring\()?(local|var)\.(\w+)\)?\}", lookup, value)


def command(module: Module, process: str) -> list[str]:
    return [render(arg, module) for arg in module.locals["processes"][process]["command"]]


def env_block_names(tree: Any) -> set[str]:
    """Names of literal `env { name = ... }` blocks anywhere below `tree`."""
    found: set[str] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "env" and isinstance(value, list):
                found |= {item["name"] for item in value if isinstance(item, dict)}
            found |= env_block_names(value)
    elif isinstance(tree, list):
        for item in tree:
            found |= env_block_names(item)
    return found


# --- reading the Python code --------------------------------------------------------------


def dotted(node: ast.expr) -> str:
    """`os.environ.get` for the expression node of that name ("" for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def setting_reads(*paths: Path) -> list[tuple[str, str, int]]:
    """(reader, NAME, argument count) for every environment read in the given sources."""
    reads = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and dotted(node.func) in ENV_READERS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                reads.append((dotted(node.func), node.args[0].value, len(node.args)))
    return reads


# --- Terraform itself evaluating the module's variables and locals --------------------------

# Values for the module's required variables: enough for Terraform to evaluate the rest.
REQUIRED_VALUES = {
    "image": "registry.example.com/hallmark:0.1.0",
    "database_url": "postgresql://hallmark:secret@db.internal:5432/hallmark?sslmode=require",
    "redis_url": "rediss://:secret@redis.internal:6380/0",
    "secret_key": "k" * 50,
    "vault_addr": "https://vault.internal:8200",
    "http_public_url": "https://hallmark.example.com",
    "agent_endpoint": "agents.hallmark.example.com:8081",
}


class Evaluator:
    """`terraform apply` of the module's variables and locals, with outputs of expressions.

    Terraform runs for real (variable validations, locals, functions), without a cluster: the
    copy holds variables*.tf and locals.tf only, so no provider is needed; the one local that
    names a resource (the created namespace's name) reads var.namespace instead.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for path in [*MODULE.glob("variables*.tf"), MODULE / "locals.tf"]:
            text = path.read_text()
            if path.name == "locals.tf":
                resource = "kubernetes_namespace_v1.this[0].metadata[0].name"
                assert text.count(resource) == 1
                text = text.replace(resource, "var.namespace")
            (directory / path.name).write_text(text)
        self._run("init", "-input=false", "-backend=false")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["terraform", f"-chdir={self.directory}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"},
        )

    def apply(
        self, variables: dict[str, Any], outputs: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """(output values, error details) of an apply with REQUIRED_VALUES and `variables`."""
        lines = [
            f'output "{name}" {{\n  value = {expr}\n}}\n' for name, expr in (outputs or {}).items()
        ]
        (self.directory / "probe.tf").write_text("".join(lines))
        (self.directory / "values.tfvars.json").write_text(
            json.dumps({**REQUIRED_VALUES, **variables})
        )
        (self.directory / "terraform.tfstate").unlink(missing_ok=True)
        result = self._run(
            "apply", "-auto-approve", "-input=false", "-lock=false", "-json",
            "-var-file=values.tfvars.json",
        )  # fmt: skip
        messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        errors = [
            " ".join(f"{m['diagnostic']['summary']}: {m['diagnostic'].get('detail', '')}".split())
            for m in messages
            if m.get("type") == "diagnostic" and m["diagnostic"]["severity"] == "error"
        ]
        if result.returncode != 0:
            assert errors, result.stdout + result.stderr
            return {}, errors
        shown = self._run("output", "-json")
        assert shown.returncode == 0, shown.stderr
        return {name: value["value"] for name, value in json.loads(shown.stdout).items()}, errors
