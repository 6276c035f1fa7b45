"""Private socket paths stay private and within the Unix socket path limit."""

import os
import stat

from hallmark.relay import MAX_SOCKET_PATH, private_socket_path


def test_private_socket_directory_is_0700(tmp_path) -> None:
    path = private_socket_path(str(tmp_path / "private"))
    assert path == str(tmp_path / "private" / "inner.sock")
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o700


def test_a_data_dir_too_deep_for_a_socket_path_falls_back_to_a_private_temp_dir(tmp_path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = private_socket_path(str(deep))
    assert len(path.encode()) <= MAX_SOCKET_PATH
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_public_socket_may_use_the_whole_socket_path_length(tmp_path) -> None:
    import asyncio

    from hallmark.relay import PeerRegistry, Relay

    # given a socket path exactly as long as a Unix socket path may be
    directory = tmp_path / "pub"
    directory.mkdir()
    name = "s" * (MAX_SOCKET_PATH - len(str(directory)) - 1)
    path = directory / name
    assert len(str(path)) == MAX_SOCKET_PATH

    async def none(writer):  # type: ignore[no-untyped-def]
        return None

    async def scenario() -> None:
        relay = Relay(private_socket_path(str(tmp_path / "private")), PeerRegistry(), none)
        await relay.serve_unix(str(path))
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        await relay.close()

    asyncio.run(scenario())
