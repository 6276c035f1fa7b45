"""Two workloads with SVIDs from one agent establish mTLS with spiffe-tls, each authorising the other."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from spiffe import SpiffeId, X509Source
from spiffetls import ListenOptions, ServerTlsMode, listen
from spiffetls.tlsconfig.authorize import authorize_id

from tests.e2e.conftest import free_port, wait_for
from tests.e2e.mtls import serve_one

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
NOBODY = 65534


def test_two_workloads_authenticate_each_other_with_svids_from_the_agent(
    control_plane, tmp_path
) -> None:
    tenant = control_plane.signup("mtls")
    td, token = tenant["trust_domain"], tenant["token"]
    alias = f"spiffe://{td}/node/mtls"
    server_id, client_id = f"spiffe://{td}/mtls/server", f"spiffe://{td}/mtls/client"
    for spiffe_id, uid in ((server_id, 0), (client_id, NOBODY)):
        answer = control_plane.call(
            token,
            "POST",
            "entries",
            json={"spiffe_id": spiffe_id, "parent_id": alias, "selectors": [f"unix:uid:{uid}"]},
        )
        assert answer.status_code == 201, answer.text
    join = control_plane.call(token, "POST", "join-tokens", json={"spiffe_id": alias}).json()[
        "token"
    ]
    # pytest's tmp_path sits under a 0700 directory; the uid-65534 workload must reach the socket
    work = Path(tempfile.mkdtemp(prefix="hallmark-mtls-"))
    work.chmod(0o755)
    _, socket_path = control_plane.start_agent(
        td, join, work, "--trust-bundle-url", tenant["bundle_url"]
    )
    wait_for(socket_path.exists, 60, "the Workload API socket")

    address = f"127.0.0.1:{free_port()}"
    with X509Source(socket_path=f"unix:{socket_path}", timeout_in_seconds=60) as source:
        assert str(source.svid.spiffe_id) == server_id
        listener = listen(
            address,
            source,
            ListenOptions(
                tls_mode=ServerTlsMode.MTLS, authorize_fn=authorize_id(SpiffeId(client_id))
            ),
        )
        server, received = serve_one(listener, server_id)
        client = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("spiffetls_client.py")),
                str(socket_path),
                address,
                server_id,
                str(NOBODY),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        server.join(timeout=30)
        listener.close()

    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == f"pong from {server_id}"
    assert received == [f"ping from {client_id}".encode()]
