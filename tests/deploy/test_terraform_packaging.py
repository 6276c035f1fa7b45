"""deploy/terraform's surroundings: the example, the README, the Dockerfile, formatting."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.deploy.terraform_module import MODULE, ROOT, Module, parse, pyproject


def test_example_passes_every_required_variable_and_only_declared_ones(module: Module):
    example = parse(MODULE / "examples" / "basic" / "main.tf")
    arguments = set(example["module"][0]["hallmark"]) - {"source"}
    required = {name for name, v in module.variables.items() if "default" not in v}

    assert example["module"][0]["hallmark"]["source"] == "../.."
    assert arguments - module.variables.keys() == set()
    assert required - arguments == set()


def test_readme_documents_every_variable(module: Module):
    readme = (MODULE / "README.md").read_text()

    assert [name for name in module.variables if f"`{name}`" not in readme] == []


def test_dockerfile_installs_every_package_and_runs_as_the_modules_user(module: Module):
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    project = pyproject()
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+)/ ", dockerfile, flags=re.MULTILINE))
    user = re.search(r"^USER (\d+)", dockerfile, flags=re.MULTILINE)

    assert packages <= copied
    assert re.search(r"^COPY pyproject.toml README.md ", dockerfile, flags=re.MULTILINE)
    assert user and int(user.group(1)) == module.variables["run_as_user"]["default"]


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_fmt_is_clean():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(MODULE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
