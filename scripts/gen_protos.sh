#!/usr/bin/env bash
# Regenerate the committed protobuf/gRPC code from hallmark/protos/*.proto.
# Usage: scripts/gen_protos.sh [OUTPUT_ROOT]   (default: the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$out/hallmark/protos"
"$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  hallmark/protos/workloadapi.proto hallmark/protos/agent.proto

# The Workload API proto has no package (its method paths must be /SpiffeWorkloadAPI/...), so
# its message names are global. py-spiffe registers the same names in protobuf's default pool,
# and two such modules cannot load in one process. Build ours in a private pool instead.
"$python" - "$out/hallmark/protos/workloadapi_pb2.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
old = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
new = (
    "# Private pool: the proto has no package, so its names would clash with other copies\n"
    "# (py-spiffe's) in the default pool. See scripts/gen_protos.sh.\n"
    "_pool = _descriptor_pool.DescriptorPool()\n"
    "_pool.AddSerializedFile(google_dot_protobuf_dot_struct__pb2.DESCRIPTOR.serialized_pb)\n"
    "DESCRIPTOR = _pool.AddSerializedFile("
)
assert old in text, "protoc output changed; update scripts/gen_protos.sh"
open(path, "w").write(text.replace(old, new))
PY
