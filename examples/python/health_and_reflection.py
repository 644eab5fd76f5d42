#!/usr/bin/env python3
"""The standard clients from PyPI against a running diffgap: grpcio-health-checking's Health
stub (Check and Watch) and grpcio-reflection's descriptor database (which services and
methods the server describes, resolved without any .proto file). With --token, also checks
that health answers without a token while the API refuses a call without one.

    python examples/python/health_and_reflection.py --addr 127.0.0.1:50051 [--token T]
"""

import argparse
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--token", help="bearer token the server requires")
    args = ap.parse_args()
    ch = grpc.insecure_channel(args.addr)

    # Health, without any token.
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", "diffgap.v1.Diffgap"):
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        check(r.status == health_pb2.HealthCheckResponse.SERVING, f"Health.Check({service!r}) = SERVING")
    watch = health.Watch(health_pb2.HealthCheckRequest(service="diffgap.v1.Diffgap"), timeout=10)
    first = next(watch)
    watch.cancel()
    check(first.status == health_pb2.HealthCheckResponse.SERVING, "Health.Watch streams SERVING")
    try:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        raise SystemExit("FAILED: an unknown service got a status")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "Health.Check of an unknown service is NOT_FOUND")

    # Reflection (v1alpha, what grpcio-reflection speaks); it needs the token when tokens are on.
    if args.token:
        try:
            list(ProtoReflectionDescriptorDatabase(ch).get_services())
            raise SystemExit("FAILED: reflection answered without a token")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNAUTHENTICATED, "reflection without a token is UNAUTHENTICATED")
        ch = grpc.intercept_channel(ch, _Bearer(args.token))
    db = ProtoReflectionDescriptorDatabase(ch)
    services = set(db.get_services())
    check({"diffgap.v1.Diffgap", "grpc.health.v1.Health"} <= services, f"reflection lists {sorted(services)}")
    pool = DescriptorPool(db)
    svc = pool.FindServiceByName("diffgap.v1.Diffgap")
    methods = sorted(m.name for m in svc.methods)
    check({"Bridge", "Rank", "Info"} <= set(methods), f"diffgap.v1.Diffgap methods by reflection: {methods}")
    bridge = pool.FindMessageTypeByName("diffgap.v1.BridgeItem")
    check("embedding" in bridge.fields_by_name, "BridgeItem resolved by reflection has its fields")
    print("health and reflection clients: all checks passed")


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds 'authorization: Bearer <token>' to every call."""

    def __init__(self, token):
        self.meta = ("authorization", f"Bearer {token}")

    def _details(self, d):
        md = list(d.metadata or []) + [self.meta]
        return d._replace(metadata=md) if hasattr(d, "_replace") else _Details(d, md)

    def intercept_unary_unary(self, cont, details, request):
        return cont(self._details(details), request)

    def intercept_stream_stream(self, cont, details, it):
        return cont(self._details(details), it)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, md):
        self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
        self.wait_for_ready, self.compression, self.metadata = getattr(d, "wait_for_ready", None), getattr(d, "compression", None), md


if __name__ == "__main__":
    sys.exit(main())
