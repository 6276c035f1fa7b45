"""`hallmark demo`: the main job end to end, through the public contracts only."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from config.embedded import _die_with_parent
from config.supervisor import ControlPlane, say
from hallmark.bundle import Bundle, load_pem_certificates
from hallmark.jwtsvid import verify_jwt_svid
from hallmark.relay import MAX_SOCKET_PATH
from hallmark.spiffeid import TrustDomain
from hallmark.x509svid import verify_x509_svid


def _call(method: str, url: str, token: str | None = None, **kwargs: object) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.request(method, url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
    if answer.status_code >= 300:
        raise SystemExit(
            f"hallmark demo: {method} {url} answered {answer.status_code}: {answer.text}"
        )
    return answer.json()  # type: ignore[no-any-return]


def run_demo(plane: ControlPlane) -> None:
    api = f"{plane.http_url}/api/v1"
    trust_domain = f"demo-{secrets.token_hex(3)}.hallmark.test"
    work = plane.data_dir / "demo" / trust_domain
    work.mkdir(parents=True, exist_ok=True)

    say(f"signing up tenant 'Demo' with trust domain {trust_domain}")
    owner_password = secrets.token_urlsafe(16)  # the demo's own; printed for the console
    signup = _call(
        "POST",
        f"{api}/signup",
        json={
            "name": "Demo",
            "trust_domain": trust_domain,
            "email": f"owner@{trust_domain}",
            "password": owner_password,
        },
    )
    token = str(signup["token"])
    node_alias = f"spiffe://{trust_domain}/node/demo"
    workload_id = f"spiffe://{trust_domain}/demo/workload"
    say(f"registering {workload_id} for unix:uid:{os.getuid()} under node alias {node_alias}")
    _call(
        "POST",
        f"{api}/entries",
        token,
        json={
            "spiffe_id": workload_id,
            "parent_id": node_alias,
            "selectors": [f"unix:uid:{os.getuid()}"],
            "hint": "demo",
        },
    )
    join = _call("POST", f"{api}/join-tokens", token, json={"ttl": 600, "spiffe_id": node_alias})
    bundle_json = requests.get(
        f"{api}/bundle", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).content
    bundle_path = work / "bundle.json"
    bundle_path.write_bytes(bundle_json)

    socket_path = work / "agent.sock"
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:  # a deep checkout: keep it short
        socket_path = Path(tempfile.mkdtemp(prefix="hallmark-demo-")) / "agent.sock"
    say("starting hallmark-agent (join token attestation)")
    agent_bin = str(Path(sys.executable).parent / "hallmark-agent")
    log_fd = os.open(
        plane.data_dir / "logs" / "demo-agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
    )
    plane.children["demo-agent"] = subprocess.Popen(  # noqa: S603
        [
            agent_bin,
            "run",
            "--server",
            plane.grpc_address,
            "--trust-domain",
            trust_domain,
            "--socket",
            str(socket_path),
            "--data-dir",
            str(work / "agent"),
            "--trust-bundle",
            str(bundle_path),
        ],
        # the join token through the environment, out of reach of /proc/<pid>/cmdline
        env={**os.environ, "HALLMARK_JOIN_TOKEN": str(join["token"])},
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    os.close(log_fd)

    out_dir = work / "svid"
    deadline = time.monotonic() + 60
    say("fetching the X.509-SVID through the SPIFFE Workload API")
    while True:
        plane.check_children()
        fetch = subprocess.run(  # noqa: S603
            [
                agent_bin,
                "api",
                "fetch",
                "x509",
                "--socket",
                str(socket_path),
                "--write",
                str(out_dir),
                "--timeout",
                "5",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fetch.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"hallmark demo: no SVID within 60 s:\n{fetch.stdout}{fetch.stderr}"
                f"\nagent log: {plane.data_dir / 'logs' / 'demo-agent.log'}"
            )
        time.sleep(0.5)
    print(fetch.stdout, flush=True)

    chain = load_pem_certificates((out_dir / "svid.0.pem").read_bytes())
    bundle = Bundle.parse(TrustDomain(trust_domain), bundle_json)
    verified = verify_x509_svid(chain, bundle.x509_authorities)
    say(f"verified {verified} against the bundle from GET /api/v1/bundle")
    say(f"files written to {out_dir}")

    say("fetching a JWT-SVID for audience 'demo' through the SPIFFE Workload API")
    jwt = subprocess.run(  # noqa: S603
        [agent_bin, "api", "fetch", "jwt", "--audience", "demo", "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if jwt.returncode != 0:
        raise SystemExit(f"hallmark demo: no JWT-SVID:\n{jwt.stdout}{jwt.stderr}")
    print(jwt.stdout, flush=True)
    token = next(line.strip() for line in jwt.stdout.splitlines() if line.startswith("\t"))
    claims = verify_jwt_svid(token, audience="demo", bundles={bundle.trust_domain: bundle})
    say(f"verified JWT-SVID of {claims.spiffe_id} (audience demo) against the same bundle")
    say(
        f"web console (while the plane runs): {plane.http_url}/console/ — sign in at "
        f"{plane.http_url}/login as owner@{trust_domain} with the password {owner_password}"
    )
