"""`hallmark check`: a preflight of the servers a control plane is configured to use.

For an operator before a rollout: connects to the configured PostgreSQL, Redis, Vault/OpenBao
(token valid, may create keys, transit mounted) and PKCS#11 module, and says in plain words
what is wrong and what to do. Starts nothing (the embedded servers are `hallmark up`'s); the
exit status is non-zero when any part fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import psycopg
import redis
import requests


@dataclass(frozen=True)
class Finding:
    """One part's verdict: ok, or what is wrong and what to do about it."""

    part: str
    ok: bool
    detail: str


def check_database(url: str) -> Finding:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Finding(
            "PostgreSQL",
            False,
            f"cannot connect ({reason}); check HALLMARK_DATABASE_URL (host, port, database, "
            "user, password) and that the server accepts connections from here",
        )
    server_version = version[0] if version else "?"
    return Finding("PostgreSQL", True, f"connected (server {server_version})")


def check_redis(url: str) -> Finding:
    try:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis.RedisError as exc:
        return Finding(
            "Redis",
            False,
            f"cannot reach it ({exc}); check HALLMARK_REDIS_URL and that the server is up",
        )
    return Finding("Redis", True, f"PING answered (server {version})")


def check_vault(  # noqa: PLR0911 - one plain answer for each way it can be wrong
    address: str, token: str | None, mount: str, cacert: str | None
) -> Finding:
    verify: bool | str = cacert or True
    try:
        health = requests.get(f"{address}/v1/sys/health", timeout=5, verify=verify)
    except requests.RequestException as exc:
        return Finding(
            "Vault",
            False,
            f"cannot reach {address} ({type(exc).__name__}); check HALLMARK_VAULT_ADDR "
            "(and HALLMARK_VAULT_CACERT for a private CA)",
        )
    states = {429: "a standby", 501: "not initialised", 503: "sealed"}
    if health.status_code in states:
        return Finding(
            "Vault", False, f"{address} is {states[health.status_code]}; unseal or fix it first"
        )
    if not token:
        return Finding(
            "Vault", False, "no token: set HALLMARK_VAULT_TOKEN or HALLMARK_VAULT_TOKEN_FILE"
        )
    client = hvac.Client(url=address, token=token, verify=verify, timeout=5)
    try:
        if not client.is_authenticated():
            return Finding(
                "Vault", False, "the token is not valid (expired or revoked); issue a new one"
            )
        mounts = client.sys.list_mounted_secrets_engines().get("data", {})
    except hvac.exceptions.Forbidden:
        return Finding(
            "Vault",
            False,
            "the token may not list secrets engines; give the provisioner policy read on "
            "sys/mounts (see README, 'Running it for real')",
        )
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        return Finding("Vault", False, f"{type(exc).__name__}: {exc}")
    if f"{mount}/" not in mounts:
        return Finding(
            "Vault",
            False,
            f"no secrets engine at {mount}/; enable transit there "
            f"(`bao secrets enable -path={mount} transit`) or set HALLMARK_VAULT_TRANSIT_MOUNT",
        )
    return Finding("Vault", True, f"{address}: token valid, transit mounted at {mount}/")


def check_pkcs11(module: str) -> Finding:
    if not Path(module).exists():
        return Finding(
            "PKCS#11",
            False,
            f"module {module} not found; install it (Debian: softhsm2) or set "
            "HALLMARK_PKCS11_MODULE",
        )
    try:
        import pkcs11

        library = pkcs11.lib(module)
        slots = library.get_slots()
    except Exception as exc:  # a broken module raises whatever its loader raises
        return Finding("PKCS#11", False, f"module {module} does not load: {exc}")
    return Finding(
        "PKCS#11", True, f"{module} loads ({library.manufacturer_id.strip()}, {len(slots)} slots)"
    )


def run_checks(settings: Any) -> list[Finding]:
    """Every configured part, in the order a control plane needs them."""
    findings = [
        check_database(_database_url(settings.DATABASES["default"])),
        check_redis(settings.REDIS_URL),
    ]
    token, unreadable = _vault_token(settings)
    findings.append(
        unreadable
        or check_vault(
            settings.VAULT_ADDR, token, settings.VAULT_TRANSIT_MOUNT, settings.VAULT_CACERT
        )
    )
    if settings.DEFAULT_KEY_MANAGER == "pkcs11" or os.environ.get("HALLMARK_PKCS11_MODULE"):
        findings.append(check_pkcs11(settings.PKCS11_MODULE))
    return findings


def _vault_token(settings: Any) -> tuple[str | None, Finding | None]:
    if settings.VAULT_TOKEN or not settings.VAULT_TOKEN_FILE:
        return settings.VAULT_TOKEN, None
    try:
        return Path(settings.VAULT_TOKEN_FILE).read_text().strip(), None
    except OSError as exc:
        return None, Finding(
            "Vault",
            False,
            f"cannot read HALLMARK_VAULT_TOKEN_FILE {settings.VAULT_TOKEN_FILE}: {exc.strerror}",
        )


def _database_url(database: dict[str, str]) -> str:
    """libpq's spelling of Django's database settings (psycopg takes keywords)."""
    return psycopg.conninfo.make_conninfo(
        host=database["HOST"] or None,
        port=database["PORT"] or None,
        dbname=database["NAME"],
        user=database["USER"] or None,
        password=database["PASSWORD"] or None,
    )


def report(findings: list[Finding]) -> tuple[str, int]:
    lines = [f"{'ok  ' if f.ok else 'FAIL'} {f.part}: {f.detail}" for f in findings]
    failed = [f.part for f in findings if not f.ok]
    lines.append(
        f"{len(failed)} of {len(findings)} checks failed: {', '.join(failed)}"
        if failed
        else f"all {len(findings)} checks passed"
    )
    return "\n".join(lines), 1 if failed else 0
