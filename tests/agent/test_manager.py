"""The agent's attestation and sync loop against an agent API speaking the real protocol."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.manager import AgentError, AgentManager
from agent.state import AgentState
from hallmark.bundle import Bundle
from hallmark.x509svid import verify_x509_svid
from tests.agent.agent_api_standin import AgentApiStandin, StandinEntry

Scenario = Callable[[AgentApiStandin, Path], Awaitable[None]]


def run(scenario: Scenario, tmp_path: Path) -> None:
    async def main() -> None:
        standin = AgentApiStandin()
        await standin.start()
        try:
            await asyncio.wait_for(scenario(standin, tmp_path), timeout=60)
        finally:
            await standin.stop()

    asyncio.run(main())


def config_for(standin: AgentApiStandin, tmp_path: Path, **overrides: Any) -> AgentConfig:
    bundle_file = tmp_path / "bundle.pem"
    bundle_file.write_bytes(standin.bundle_pem())
    values: dict[str, Any] = {
        "server": f"127.0.0.1:{standin.port}",
        "trust_domain": "example.org",
        "join_token": "good-token",
        "data_dir": str(tmp_path / "data"),
        "socket": str(tmp_path / "api.sock"),
        "trust_bundle": str(bundle_file),
    }
    values.update(overrides)
    return AgentConfig.from_mapping({k: v for k, v in values.items() if v is not None})


def test_agent_attests_saves_its_svid_and_mints_svids_for_its_entries(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given two entries for this agent
        standin.servicer.put_entry(StandinEntry("e1", "spiffe://example.org/web", ["unix:uid:0"]))
        standin.servicer.put_entry(StandinEntry("e2", "spiffe://example.org/db", ["unix:uid:1000"]))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)

        # when the agent bootstraps and syncs once
        await manager.bootstrap()
        await manager.sync_once()

        # then it attested once, called with its SVID and trust-domain metadata
        calls = standin.servicer.calls
        assert calls.attest == 1
        assert calls.client_ids == {"spiffe://example.org/spire/agent/join_token/token-1"}
        assert calls.metadata_trust_domains == {"example.org"}
        # and holds a verifying SVID for each entry, keyed on the agent
        snapshot = state.snapshot
        assert snapshot.ready
        assert set(snapshot.svids) == {"e1", "e2"}
        for entry_id, spiffe_id in (("e1", "/web"), ("e2", "/db")):
            held = snapshot.svids[entry_id].svid
            assert str(verify_x509_svid(held.chain, [standin.authority.ca])).endswith(spiffe_id)
        # and its key is on disk 0600 for a restart
        key_file = tmp / "data" / "agent_svid.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600

    run(scenario, tmp_path)


def test_agent_resumes_from_its_saved_svid_without_attesting_again(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an agent that attested and saved its SVID
        await AgentManager(config_for(standin, tmp), AgentState()).bootstrap()

        # when a new agent process starts on the same data dir without a join token
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp, join_token=None), state)
        await manager.bootstrap()
        await manager.sync_once()

        # then it did not attest again and is accepted with the saved SVID
        assert standin.servicer.calls.attest == 1
        assert state.snapshot.ready

    run(scenario, tmp_path)


def test_svids_of_removed_entries_are_dropped_and_unchanged_ones_kept(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        standin.servicer.put_entry(StandinEntry("e1", "spiffe://example.org/web", ["unix:uid:0"]))
        standin.servicer.put_entry(StandinEntry("e2", "spiffe://example.org/db", ["unix:uid:1000"]))
        state = AgentState()
        manager = AgentManager(config_for(standin, tmp), state)
        await manager.bootstrap()
        await manager.sync_once()
        kept_serial = state.snapshot.svids["e1"].svid.leaf.serial_number

        # when e2 is deleted on the server
        standin.servicer.remove_entry("e2")
        await manager.sync_once()

        # then its SVID is gone at once and e1's is not re-minted
        assert set(state.snapshot.svids) == {"e1"}
        assert state.snapshot.svids["e1"].svid.leaf.serial_number == kept_serial
        assert standin.servicer.calls.batches == [["e1", "e2"]]

    run(scenario, tmp_path)


def test_agent_svid_past_half_life_is_renewed(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given an agent SVID of 4 s that has lived past half its life (counted from issue)
        import datetime as dt

        standin.servicer.agent_ttl = dt.timedelta(seconds=4)
        manager = AgentManager(config_for(standin, tmp), AgentState())
        await manager.bootstrap()
        await asyncio.sleep(2.5)

        # when the agent syncs
        await manager.sync_once()

        # then it renewed over mTLS and saved the new SVID
        assert standin.servicer.calls.renew == 1
        saved = (tmp / "data" / "agent_svid.pem").read_bytes()
        assert b"BEGIN CERTIFICATE" in saved

    run(scenario, tmp_path)


def test_insecure_bootstrap_attests_without_a_bundle_and_then_verifies(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        config = config_for(standin, tmp, trust_bundle=None, insecure_bootstrap=True)
        state = AgentState()
        manager = AgentManager(config, state)

        await manager.bootstrap()
        await manager.sync_once()

        assert standin.servicer.calls.attest == 1
        saved = Bundle.parse(config.trust_domain, (tmp / "data" / "bundle.json").read_bytes())
        assert saved.x509_authorities == (standin.authority.ca,)
        assert state.snapshot.ready

    run(scenario, tmp_path)


def test_used_join_token_stops_the_agent_with_a_clear_error(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        manager = AgentManager(config_for(standin, tmp, join_token="not-a-token"), AgentState())

        with pytest.raises(
            AgentError, match="attestation refused: PERMISSION_DENIED: join_token_used"
        ):
            await manager.bootstrap()

    run(scenario, tmp_path)


def test_agent_does_not_talk_to_a_server_outside_its_bundle(tmp_path: Path) -> None:
    async def scenario(standin: AgentApiStandin, tmp: Path) -> None:
        # given a trust bundle of some other CA
        other = AgentApiStandin()
        config = config_for(standin, tmp)
        Path(config.trust_bundle or "").write_bytes(other.bundle_pem())
        await other.stop()
        manager = AgentManager(config, AgentState())

        # when it tries to attest, the TLS handshake fails and it keeps retrying
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(manager.bootstrap(), timeout=3)

        # then the join token never reached the server
        assert standin.servicer.calls.attest == 0

    run(scenario, tmp_path)
