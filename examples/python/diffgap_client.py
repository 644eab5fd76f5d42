#!/usr/bin/env python3
"""A diffgap client in Python: stubs generated from proto/ by grpcio-tools (stubs.py), then
Info, Bridge and Rank against a running server, checking what comes back.

    python examples/python/diffgap_client.py --addr 127.0.0.1:50051
    python examples/python/diffgap_client.py --addr host:50051 --token "$TOKEN" --ca ca.pem

Exits non-zero, saying why, when a call fails or an answer is wrong. CI runs it against the
staged server (scripts/ops-check.sh).
"""

import argparse
import math
import random
import sys

import grpc

import stubs


def channel(args):
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=open(args.ca, "rb").read(),
            private_key=open(args.key, "rb").read() if args.key else None,
            certificate_chain=open(args.cert, "rb").read() if args.cert else None,
        )
        opts = [("grpc.ssl_target_name_override", args.domain)] if args.domain else []
        return grpc.secure_channel(args.addr, creds, options=opts)
    return grpc.insecure_channel(args.addr)


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def cos(a, b):
    return sum(x * y for x, y in zip(unit(a), unit(b)))


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--token", help="bearer token (sent as 'authorization: Bearer ...')")
    ap.add_argument("--ca", help="CA (PEM) of the server's certificate: use TLS")
    ap.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    ap.add_argument("--key", help="client key (PEM) for mutual TLS")
    ap.add_argument("--domain", help="name the server's certificate carries")
    ap.add_argument("--stubs", help="where to generate the stubs (default .cache/pystubs)")
    args = ap.parse_args()

    pb2, pb2_grpc = stubs.load(args.stubs)
    meta = [("authorization", f"Bearer {args.token}")] if args.token else []
    stub = pb2_grpc.DiffgapStub(channel(args))

    info, call = stub.Info.with_call(pb2.InfoRequest(), metadata=meta, timeout=30)
    check(len(info.models) >= 1, f"Info lists {len(info.models)} model(s), device {info.device!r}, version {info.version!r}")
    model = info.models[0]
    dim = model.dim
    check(dim > 0 and len(model.modalities) >= 2, f"model {model.name!r}: dim {dim}, modalities {list(model.modalities)}")
    request_id = dict(call.initial_metadata()).get("x-request-id")
    check(bool(request_id), f"the answer carries x-request-id {request_id!r}")
    src, dst = model.modalities[0], model.modalities[1]

    rng = random.Random(0)
    vecs = [unit([rng.gauss(0, 1) for _ in range(dim)]) for _ in range(6)]

    def bridge(seed):
        items = [pb2.BridgeItem(source_modality=src, target_modality=dst,
                                embedding=pb2.Embedding(values=v), seed=seed) for v in vecs[:3]]
        return stub.Bridge(pb2.BridgeRequest(items=items), metadata=meta, timeout=60)

    b1 = bridge(7)
    check(len(b1.embeddings) == 3 and all(len(e.values) == dim for e in b1.embeddings),
          f"Bridge {src}->{dst} returns 3 embeddings of dim {dim}")
    norms = [math.sqrt(sum(x * x for x in e.values)) for e in b1.embeddings]
    check(all(abs(n - 1) < 1e-3 for n in norms), f"bridged embeddings are unit vectors (norms {[round(n, 4) for n in norms]})")
    b2 = bridge(7)
    same = max(abs(x - y) for e1, e2 in zip(b1.embeddings, b2.embeddings) for x, y in zip(e1.values, e2.values))
    check(same < 1e-5, f"the same seed gives the same bridged embeddings (max difference {same:.2e})")
    check(b1.timings.total_ns > 0, f"Bridge reports its timings (total {b1.timings.total_ns / 1e6:.2f} ms)")

    # Rank, contrastive (the raw cosine): among random candidates, one equal to the query
    # must come first with score 1, and the order must be the cosines computed here.
    cands = [pb2.Candidate(id=f"c{i}", embedding=pb2.Embedding(values=v)) for i, v in enumerate(vecs)]
    r = stub.Rank(pb2.RankRequest(query=pb2.Embedding(values=vecs[4]), query_modality=src, candidate_modality=dst,
                                  candidates=cands, mode=pb2.RANK_MODE_CONTRASTIVE, top_k=3),
                  metadata=meta, timeout=60)
    check(len(r.results) == 3, "Rank contrastive returns top_k = 3 results")
    check(r.results[0].id == "c4" and abs(r.results[0].score - 1) < 1e-4,
          f"the candidate equal to the query ranks first with score {r.results[0].score:.5f}")
    expect = sorted(((cos(vecs[4], v), f"c{i}") for i, v in enumerate(vecs)), reverse=True)[:3]
    check([x.id for x in r.results] == [e[1] for e in expect],
          f"contrastive order matches cosines computed here: {[x.id for x in r.results]}")
    bridged_cands = [pb2.Candidate(id=f"b{i}", embedding=e) for i, e in enumerate(b1.embeddings)]
    r = stub.Rank(pb2.RankRequest(query=pb2.Embedding(values=vecs[0]), query_modality=src, candidate_modality=dst,
                                  candidates=bridged_cands, mode=pb2.RANK_MODE_BRIDGED, top_k=3, seed=1),
                  metadata=meta, timeout=60)
    scores = [x.score for x in r.results]
    check(len(r.results) == 3 and scores == sorted(scores, reverse=True) and all(x.HasField("bridged") for x in r.results),
          f"Rank bridged {src}->{dst}: 3 results by descending score {[round(s, 4) for s in scores]}, each with its bridged component")

    try:
        stub.Bridge(pb2.BridgeRequest(items=[pb2.BridgeItem(source_modality=src, target_modality=dst,
                                                            embedding=pb2.Embedding(values=[1.0] * (dim + 1)))]),
                    metadata=meta, timeout=30)
        raise SystemExit("FAILED: a wrong dimension was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"a wrong dimension gets INVALID_ARGUMENT: {e.details()!r}")
    print("python client: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
