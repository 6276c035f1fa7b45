"""The relay's own addresses and its public socket cannot be taken over by a local user."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

import pytest

from hallmark import relay as relay_module
from hallmark.relay import PeerRegistry, Relay, private_socket_path
from tests.hallmark.relay_helpers import round_trip, start_echo

REPO = Path(__file__).resolve().parents[2]

# A local user (uid 65534) who knows the relay's naming scheme (the source is public): it
# reads the relay's live client addresses from /proc/net/unix and binds the next ones, so
# that the relay cannot bind them for the next workloads. Prints how many it bound, then
# holds them until stdin closes. It aims only at this test's relay (its pid, its directory):
# other relays may be running on the machine.
SQUATTER = r"""
import os, re, socket, sys
pid, directory = sys.argv[1], re.escape(sys.argv[2])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
patterns = [
    (re.compile(rf"^(@hallmark-relay-{pid}-[0-9a-f]+-)(\d+)$"), 10),  # abstract names
    (re.compile(rf"^({directory}/.*p[0-9a-f]+-)([0-9a-f]+)$"), 16),  # in a private directory
]
names = set()
with open("/proc/net/unix") as table:
    for line in table.read().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        for pattern, base in patterns:
            if m := pattern.match(fields[7]):
                for step in range(1, 20):
                    n = int(m.group(2), base) + step
                    names.add(m.group(1) + (str(n) if base == 10 else format(n, "x")))
held = []
for name in sorted(names):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind("\0" + name[1:] if name.startswith("@") else name)
        held.append(s)
    except OSError:
        s.close()
print(len(names), len(held), flush=True)
sys.stdin.read()
"""


def test_local_user_cannot_squat_the_relays_next_addresses(tmp_path: Path) -> None:
    async def scenario() -> None:
        inner = private_socket_path(str(tmp_path / "private"))
        echo = await start_echo(inner)

        async def identify(writer: asyncio.StreamWriter) -> str:
            return "workload"

        relay: Relay[str] = Relay(inner, PeerRegistry(), identify)
        public = tmp_path / "public"
        public.mkdir(mode=0o755)
        os.chmod(tmp_path, 0o755)  # noqa: S103
        await relay.serve_unix(str(public / "api.sock"))
        squatter = None
        try:
            # given a workload connected through the relay (its address is live)
            first = await asyncio.open_unix_connection(str(public / "api.sock"))
            assert await round_trip(*first) == b"ping"

            # when another local user binds the addresses the relay will use next
            squatter = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SQUATTER,
                str(os.getpid()),
                str(tmp_path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd="/",
            )
            assert squatter.stdout is not None
            line = await asyncio.wait_for(squatter.stdout.readline(), 30)
            seen, bound = (int(x) for x in line.split())

            # then it saw the relay's addresses but could bind none of them
            assert seen > 0, "the squatter found no relay address to aim at"
            assert bound == 0
            # and the next workloads are still served
            for _ in range(5):
                reader, writer = await asyncio.open_unix_connection(str(public / "api.sock"))
                assert await round_trip(reader, writer) == b"ping"
                writer.close()
            first[1].close()
        finally:
            if squatter is not None and squatter.stdin is not None:
                squatter.stdin.close()
                await squatter.wait()
            await relay.close()
            echo.close()

    asyncio.run(scenario())


def test_public_socket_mode_is_never_set_through_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a file the attacker wants world-writable, and an attacker who swaps the socket's
    # path for a symlink to it at the moment between bind and chmod
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o600)
    socket_path = tmp_path / "api.sock"
    real_chmod = os.chmod

    def chmod_after_the_swap(path: object, mode: int, **kwargs: object) -> None:
        if os.path.lexists(socket_path):
            os.unlink(socket_path)
        os.symlink(victim, socket_path)
        real_chmod(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(relay_module.os, "chmod", chmod_after_the_swap)

    async def scenario() -> None:
        relay: Relay[str] = Relay(
            private_socket_path(str(tmp_path / "private")), PeerRegistry(), _none
        )
        await relay.serve_unix(str(socket_path), mode=0o777)
        await relay.close()

    asyncio.run(scenario())

    # then the victim keeps its mode: the mode went to the socket, not through the link
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600


def test_public_socket_gets_its_mode(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay: Relay[str] = Relay(
            private_socket_path(str(tmp_path / "private")), PeerRegistry(), _none
        )
        await relay.serve_unix(str(tmp_path / "api.sock"), mode=0o777)
        info = os.lstat(tmp_path / "api.sock")
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o777
        await relay.close()

    asyncio.run(scenario())


async def _none(writer: asyncio.StreamWriter) -> None:
    return None


def test_socket_swapped_for_a_link_before_its_mode_is_set_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an attacker who swaps the socket's path for a symlink right after bind
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o600)
    socket_path = tmp_path / "api.sock"
    real_open = os.open

    def open_after_the_swap(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path) == str(socket_path) and flags & os.O_PATH:
            os.unlink(socket_path)
            os.symlink(victim, socket_path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(relay_module.os, "open", open_after_the_swap)

    async def scenario() -> None:
        relay: Relay[str] = Relay(
            private_socket_path(str(tmp_path / "private")), PeerRegistry(), _none
        )
        try:
            with pytest.raises(relay_module.RelayError, match="was replaced"):
                await relay.serve_unix(str(socket_path), mode=0o777)
        finally:
            await relay.close()

    asyncio.run(scenario())

    # then the relay stopped with a clear error and the victim kept its mode
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
