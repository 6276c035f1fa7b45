"""The committed gRPC code is exactly what scripts/gen_protos.sh generates from the .proto files."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = [
    "agent_pb2.py",
    "agent_pb2.pyi",
    "agent_pb2_grpc.py",
    "workloadapi_pb2.py",
    "workloadapi_pb2.pyi",
    "workloadapi_pb2_grpc.py",
]


def test_generated_protos_have_not_drifted(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    for name in GENERATED:
        fresh = (tmp_path / "hallmark" / "protos" / name).read_text()
        committed = (ROOT / "hallmark" / "protos" / name).read_text()
        assert fresh == committed, f"hallmark/protos/{name} drifted; run `make protos` and commit"


def test_workload_api_messages_coexist_with_py_spiffe_in_one_process() -> None:
    import spiffe._proto.workload_pb2 as theirs

    from hallmark.protos import workloadapi_pb2 as ours

    message = ours.X509SVIDResponse(svids=[ours.X509SVID(spiffe_id="spiffe://example.org/w")])
    assert theirs.X509SVIDResponse.FromString(message.SerializeToString()).svids[0].spiffe_id == (
        "spiffe://example.org/w"
    )


def test_workload_api_service_is_exactly_the_standard_one() -> None:
    from tests.conformance.standards import STANDARDS

    standard = STANDARDS / "workloadapi.proto"
    assert (ROOT / "hallmark" / "protos" / "workloadapi.proto").read_text() == standard.read_text()
