"""Generates the Python stubs of proto/ with grpcio-tools at run time (nothing generated is
committed) and imports them: `diffgap_pb2, diffgap_pb2_grpc = stubs.load()`."""

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO = PROTO_DIR / "diffgap" / "v1" / "diffgap.proto"


def load(out_dir=None):
    """Runs protoc (grpc_tools) on proto/diffgap/v1/diffgap.proto into `out_dir` (default
    .cache/pystubs) when the stubs are missing or older than the proto, then imports them."""
    from grpc_tools import protoc

    out = Path(out_dir or os.environ.get("DIFFGAP_PYSTUBS", ROOT / ".cache" / "pystubs"))
    target = out / "diffgap" / "v1" / "diffgap_pb2.py"
    if not target.exists() or target.stat().st_mtime < PROTO.stat().st_mtime:
        out.mkdir(parents=True, exist_ok=True)
        include = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO.relative_to(PROTO_DIR)),
        ])
        if rc != 0:
            raise SystemExit(f"grpc_tools.protoc failed on {PROTO} (exit {rc})")
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb2 = importlib.import_module("diffgap.v1.diffgap_pb2")
    grpc_mod = importlib.import_module("diffgap.v1.diffgap_pb2_grpc")
    return pb2, grpc_mod
