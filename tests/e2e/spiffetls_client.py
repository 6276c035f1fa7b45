"""A second workload for the mTLS e2e test: drops to another uid, then dials with spiffe-tls.

Usage: python spiffetls_client.py SOCKET ADDRESS SERVER_SPIFFE_ID UID
Prints the server's answer. Imports happen as root (the interpreter lives under a 0700 home);
the Workload API call happens after dropping privileges, so the kernel reports UID.
"""

import os
import sys

from spiffe import SpiffeId, X509Source
from spiffetls import ClientTlsMode, dial
from spiffetls.tlsconfig.authorize import authorize_id


def main() -> None:
    socket_path, address, server_id, uid = sys.argv[1:5]
    os.setgroups([])
    os.setgid(int(uid))
    os.setuid(int(uid))
    with X509Source(socket_path=f"unix:{socket_path}", timeout_in_seconds=30) as source:
        # ClientTlsMode.TLS still presents the client SVID when the server asks (mTLS)
        connection = dial(address, source, ClientTlsMode.TLS, authorize_id(SpiffeId(server_id)))
        try:
            connection.sendall(b"ping from " + str(source.svid.spiffe_id).encode())
            print(connection.recv(1024).decode(), flush=True)
        finally:
            connection.close()


if __name__ == "__main__":
    main()
