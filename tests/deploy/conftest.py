"""The parsed Terraform module, once per session; these tests need no database."""

from __future__ import annotations

import shutil

import pytest

from tests.deploy.terraform_module import (
    ROOT,
    Evaluator,
    Module,
    load_module,
    setting_reads,
)


@pytest.fixture(scope="session")
def module() -> Module:
    return load_module()


@pytest.fixture(scope="session")
def settings_names() -> set[str]:
    """Every environment variable config/settings.py and config/env.py read."""
    reads = setting_reads(ROOT / "config" / "settings.py", ROOT / "config" / "env.py")
    names = {name for _, name, _ in reads}
    assert "HALLMARK_DATABASE_URL" in names and "HALLMARK_DATA_DIR" in names
    return names


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Evaluator:
    """Terraform evaluating the module's variables and locals (no provider, no cluster)."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    return Evaluator(tmp_path_factory.mktemp("terraform"))
