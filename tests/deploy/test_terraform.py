"""deploy/terraform held against the code it deploys: variables, secrets, setting names
(config/settings.py), the beat singleton and the process commands (config/supervisor.py,
config/cli.py, pyproject's scripts)."""

from __future__ import annotations

import ast
import json
import re

from tests.deploy.terraform_module import (
    ROOT,
    Module,
    command,
    dotted,
    dynamic,
    env_block_names,
    first,
    process_container,
    pyproject,
    setting_reads,
    var_name,
)

SECRET_VARIABLES = {
    "database_url",
    "redis_url",
    "secret_key",
    "vault_token",
    "pkcs11_pin_secret",
    "secret_files",
}


# --- variables ----------------------------------------------------------------------------


def test_every_referenced_variable_is_declared_and_every_declared_one_is_used(module: Module):
    referenced = set(re.findall(r"\bvar\.(\w+)", module.text))

    assert referenced - module.variables.keys() == set()
    assert module.variables.keys() - referenced == set()


def test_every_referenced_local_is_declared(module: Module):
    referenced = set(re.findall(r"\blocal\.(\w+)", module.text))

    assert referenced - module.locals.keys() == set()


def test_every_variable_has_a_type_and_a_description(module: Module):
    for name, variable in module.variables.items():
        assert variable.get("type"), f"variable {name} has no type"
        assert len(variable.get("description", "")) > 10, f"variable {name} has no description"


def test_secrets_are_sensitive_and_stay_in_the_secret(module: Module):
    sensitive = {name for name, v in module.variables.items() if v.get("sensitive") is True}
    secret_vars = {var_name(value) for value in module.locals["secret_env"].values()}

    assert SECRET_VARIABLES <= sensitive
    assert None not in secret_vars and secret_vars <= sensitive
    for value in module.locals["config_env"].values():
        assert var_name(str(value)) not in sensitive, f"{value} would land in the ConfigMap"
    assert not any(re.search(rf"\bvar\.{name}\b", json.dumps(module.outputs)) for name in sensitive)


def test_config_map_and_secret_keys_do_not_overlap(module: Module):
    assert module.locals["config_env"].keys() & module.locals["secret_env"].keys() == set()


def test_the_secret_and_config_map_hold_the_settings_the_pods_read(module: Module):
    config = module.resource("kubernetes_config_map_v1", "settings")
    secret = module.resource("kubernetes_secret_v1", "settings")
    env_from = process_container(module)["env_from"]

    assert config["data"] == "${local.config_data}"
    assert "local.config_env" in module.locals["config_data"]
    assert secret["data"] == "${local.secret_env}"
    assert [ref for source in env_from for ref in source] == ["config_map_ref", "secret_ref"]


# --- settings names -----------------------------------------------------------------------


def test_every_environment_variable_is_a_real_setting(module: Module, settings_names: set[str]):
    used = (
        set(module.locals["config_env"])
        | set(module.locals["secret_env"])
        | env_block_names(module.resources)
    )

    assert used - settings_names == set()


def test_every_required_setting_is_set_from_a_required_variable(module: Module):
    """Settings read with env.text(NAME) and no default stop the process when missing."""
    reads = setting_reads(ROOT / "config" / "settings.py")
    required = {name for reader, name, argc in reads if reader == "env.text" and argc == 1}
    provided = module.locals["config_env"] | module.locals["secret_env"]

    assert {"HALLMARK_DATABASE_URL", "HALLMARK_REDIS_URL", "HALLMARK_VAULT_ADDR"} <= required
    for name in required:
        variable = var_name(str(provided.get(name)))
        assert variable is not None, f"{name} is not set from a variable"
        assert "default" not in module.variables[variable], f"{variable} must be required"


# --- processes ----------------------------------------------------------------------------


def test_beat_is_a_single_replica_replaced_by_recreate(module: Module):
    processes = module.locals["processes"]
    deployment = module.resource("kubernetes_deployment_v1", "process")
    spec = first(deployment["spec"])

    assert processes["beat"]["replicas"] == 1
    assert processes["beat"]["strategy"] == "Recreate"
    assert deployment["for_each"] == "${local.processes}"
    assert spec["replicas"] == "${each.value.replicas}"
    assert first(spec["strategy"])["type"] == "${each.value.strategy}"
    assert (
        module.resources.keys()
        & {
            "kubernetes_horizontal_pod_autoscaler_v2",
            "kubernetes_stateful_set_v1",
        }
        == set()
    )
    for kind in ("web", "agent-api", "bundle-endpoint", "worker"):
        assert processes[kind]["replicas"] == f"${{var.{kind.replace('-', '_')}_replicas}}"


def _spawned(tree: ast.Module) -> dict[str, list[ast.expr]]:
    """{process kind: argv elements} of every `self._spawn(name, [...])` in the supervisor.

    `[*argv, "--flag"]` is expanded from a list assigned to `argv` in the same function, and
    `f"agent-api-{n}"` (several processes of one kind) counts as the kind "agent-api".
    """
    spawned: dict[str, list[ast.expr]] = {}
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        lists = {
            n.targets[0].id: n.value.elts
            for n in ast.walk(function)
            if isinstance(n, ast.Assign)
            and isinstance(n.targets[0], ast.Name)
            and isinstance(n.value, ast.List)
        }
        for node in ast.walk(function):
            if not (
                isinstance(node, ast.Call)
                and dotted(node.func) == "self._spawn"
                and isinstance(node.args[1], ast.List)  # not the restart of a recorded argv
            ):
                continue
            label, argv = node.args
            if isinstance(label, ast.JoinedStr):
                label = label.values[0]
            assert isinstance(label, ast.Constant) and isinstance(argv, ast.List)
            elements: list[ast.expr] = []
            for element in argv.elts:
                if isinstance(element, ast.Starred):
                    assert isinstance(element.value, ast.Name)
                    elements += lists[element.value.id]
                else:
                    elements.append(element)
            spawned[str(label.value).rstrip("-")] = elements
    return spawned


def _program(elements: list[ast.expr], scripts: dict[str, str]) -> tuple[str, list[ast.expr]]:
    """The installed program an argv starts with: `python -m config.cli` is `hallmark`."""
    head = elements[0]
    assert isinstance(head, ast.Name)
    if head.id != "python":
        return head.id, elements[1:]
    module_name = elements[2]
    assert isinstance(module_name, ast.Constant)
    script = next(
        name for name, target in scripts.items() if target.startswith(module_name.value + ":")
    )
    return script, elements[3:]


def test_commands_are_the_ones_hallmark_up_runs(module: Module):
    scripts = pyproject()["project"]["scripts"]
    spawned = _spawned(ast.parse((ROOT / "config" / "supervisor.py").read_text()))

    assert spawned.keys() == module.locals["processes"].keys()
    for kind, elements in spawned.items():
        program, rest = _program(elements, scripts)
        ours = command(module, kind)
        assert ours[0] == program, kind
        assert len(ours) - 1 == len(rest), f"{kind}: {ours} vs the supervisor's arguments"
        for element, arg in zip(rest, ours[1:], strict=True):
            if isinstance(element, ast.Constant):  # flags and fixed values must match
                assert arg == element.value, f"{kind}: {arg} != {element.value}"


def test_hallmark_commands_parse_with_the_real_cli(module: Module):
    from config.cli import _parser

    scripts = pyproject()["project"]["scripts"]
    job_spec = first(first(module.resource("kubernetes_job_v1", "migrate")["spec"])["template"])
    migrate = first(first(job_spec["spec"])["container"])["command"]

    assert migrate == "${local.migrate_command}"
    assert module.locals["migrate_command"] == ["hallmark", "migrate"]
    hallmark = [command(module, "agent-api"), command(module, "bundle-endpoint")]
    for argv in (module.locals["migrate_command"], *hallmark):
        assert scripts[argv[0]] == "config.cli:main"
        _parser().parse_args(argv[1:])  # exits (fails the test) on an unknown command
    assert _parser().parse_args(command(module, "agent-api")[1:]).listen == ("0.0.0.0", 8081)
    assert _parser().parse_args(command(module, "bundle-endpoint")[1:]).listen == (
        "0.0.0.0",
        8443,
    )


def test_third_party_programs_are_dependencies_and_targets_exist(module: Module):
    project = pyproject()["project"]
    dependencies = {re.split(r"[\[<>=!~ ]", spec)[0].lower() for spec in project["dependencies"]}
    web, worker = command(module, "web"), command(module, "worker")
    wsgi = ast.parse((ROOT / "config" / "wsgi.py").read_text())
    celery = ast.parse((ROOT / "config" / "celery.py").read_text())

    assert {web[0], worker[0], command(module, "beat")[0]} <= dependencies
    assert web[1] == "config.wsgi:application"
    assert any(
        isinstance(n, ast.Assign) and "application" in [dotted(t) for t in n.targets]
        for n in wsgi.body
    )
    assert worker[1:3] == ["-A", "config"]
    assert any(
        isinstance(n, ast.Assign) and "app" in [dotted(t) for t in n.targets] for n in celery.body
    )


def test_web_is_ready_on_readyz_and_alive_on_its_port(module: Module):
    container = process_container(module)
    readiness = first(dynamic(container, "readiness_probe")["content"])
    liveness = first(dynamic(container, "liveness_probe")["content"])
    urls = (ROOT / "config" / "urls.py").read_text()

    assert module.locals["processes"]["web"]["readiness_path"] == "/readyz"
    assert 'path("readyz"' in urls
    assert "http_get" in json.dumps(readiness) and "readiness_path" in json.dumps(readiness)
    assert "tcp_socket" in liveness and "http_get" not in json.dumps(liveness)


def test_disruption_budgets_cover_the_serving_kinds(module: Module):
    budgeted = {k for k, p in module.locals["processes"].items() if p["disruption_budgeted"]}
    pdb = module.resource("kubernetes_pod_disruption_budget_v1", "process")

    assert budgeted == {"web", "agent-api", "bundle-endpoint"}
    assert "process.disruption_budgeted" in pdb["for_each"]


def test_processes_roll_only_after_the_migration_job(module: Module):
    deployment = module.resource("kubernetes_deployment_v1", "process")
    job = module.resource("kubernetes_job_v1", "migrate")

    assert deployment["depends_on"] == ["${kubernetes_job_v1.migrate}"]
    assert job["wait_for_completion"] is True
    assert "local.release" in first(job["metadata"])["name"]
    assert "var.image" in module.locals["release"]
