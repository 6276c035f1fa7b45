"""The server half of a spiffe-tls exchange in the e2e tests: accept one caller on a thread."""

from __future__ import annotations

import threading
from typing import Any


def serve_one(listener: Any, server_id: str) -> tuple[threading.Thread, list[bytes]]:
    """Accept one connection on `listener` (spiffetls.listen), keep what it sends, answer
    `pong from <server_id>` and close; the list fills once the thread has run."""
    received: list[bytes] = []

    def run() -> None:
        connection, _ = listener.accept()
        received.append(connection.recv(1024))
        connection.sendall(b"pong from " + server_id.encode())
        connection.shutdown()
        connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, received
