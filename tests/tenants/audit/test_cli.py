"""`hallmark audit verify [--tenant SLUG]`: exit 0 for an intact chain, 1 naming the first bad
event; run in-process and as the real command on the session's servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.db import connection

from config.cli import main
from tenants.services import record_audit
from tests.tenants.audit.conftest import chain_ids, sql

pytestmark = pytest.mark.django_db(transaction=True)
BIN = Path(sys.executable).parent


def test_verify_exits_0_for_an_intact_chain_and_1_naming_the_changed_event(
    tenant_a, tenant_b, capsys, monkeypatch
) -> None:
    # Django is set up already: the command must not set it (and its logging) up again here
    monkeypatch.setattr("config.cli._django", lambda: None)
    for i in range(3):
        record_audit(tenant=tenant_a.tenant, actor="u", action="x", target=str(i))

    assert main(["audit", "verify", "--tenant", tenant_a.tenant.slug]) == 0
    assert f"{tenant_a.tenant.slug}: valid" in capsys.readouterr().out

    # when B's second event is changed, A's chain still verifies and B's names the event
    bad = chain_ids(tenant_b.tenant)[1]
    sql("UPDATE audit_auditevent SET target = 'x' WHERE id = %s", [bad])
    assert main(["audit", "verify", "--tenant", tenant_a.tenant.slug]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--tenant", tenant_b.tenant.slug]) == 1
    out = capsys.readouterr().out
    assert f"INVALID at sequence 2 (event {bad})" in out and "hash_mismatch" in out

    # every chain at once: the platform's and each tenant's, failing because of B's
    assert main(["audit", "verify", "--json"]) == 1
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_chain = {a["chain"]: a for a in answers}
    assert by_chain[tenant_a.tenant.slug]["valid"] is True
    assert by_chain[tenant_b.tenant.slug]["first_invalid_id"] == bad
    assert "platform" in by_chain

    assert main(["audit", "verify", "--tenant", "no-such-tenant"]) == 2


def test_the_installed_command_verifies_against_the_configured_database(tenant_a) -> None:
    # given the command run as an operator would, on the session's servers (as external ones)
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    url = urlparse(env["HALLMARK_DATABASE_URL"])
    env["HALLMARK_DATABASE_URL"] = url._replace(
        path=f"/{connection.settings_dict['NAME']}"
    ).geturl()
    env.setdefault("HALLMARK_SECRET_KEY", "cli-test")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "hallmark"), "audit", "verify", "--tenant", tenant_a.tenant.slug],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # when the tail is cut, it exits 1 naming where the trail breaks off
    ids = chain_ids(tenant_a.tenant)
    sql("DELETE FROM audit_auditevent WHERE id = %s", [ids[-1]])
    cut = run()
    assert cut.returncode == 1
    assert f"INVALID at sequence {len(ids)}" in cut.stdout and "truncated" in cut.stdout
