#!/usr/bin/env python3
"""The Python peer of `diffgap serve`: the server a Python engineer would write instead of
diffgap, for the benchmark of docs/benchmarks.md ("The Python peer"). grpc.aio speaks the same
diffgap.v1 Bridge (and the Info that `diffgap loadgen` asks first) on the same model
directory: the same TorchScript denoiser, the same normalisation, the same DDIM sampler with
the same seeded noise (sampler.py, noise.py), so that its answers equal diffgap's (checked by
`diffgap loadgen --peer-addr ... --peer-check-only`); dynamic batching over worker threads
(batcher.py). Embeddings only (no raw inputs), no Rank, Refine, auth or TLS: what the
benchmark's load needs, checked as diffgap checks it.

    .cache/peer/venv/bin/python benches/python_peer/server.py --model models/default \
        --listen 127.0.0.1:50061

(scripts/bench-peer.sh makes that venv: the project's .venv, for torch, plus grpcio.) Prints `listening on HOST:PORT` once the workers have loaded and warmed up.
"""

import argparse
import asyncio
import os
import sys
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "examples" / "python"))

import stubs  # noqa: E402  (examples/python/stubs.py: generates the stubs from proto/)
from batcher import Batcher, Job  # noqa: E402
from sampler import Model, l2_rows, row_seed  # noqa: E402

pb2, pb2_grpc = stubs.load()

MAX_ITEMS = 1024
MAX_SAMPLES = 64
MAX_GUIDANCE = 20.0


class Invalid(Exception):
    pass


class Peer(pb2_grpc.DiffgapServicer):
    def __init__(self, model, batcher, args):
        self.model = model
        self.batcher = batcher
        self.args = args

    async def Info(self, request, context):
        m, c = self.model, self.model.card
        d = c["defaults"]
        info = pb2.ModelInfo(
            name=c["name"], space=c["space"]["name"], modalities=c["space"]["modalities"],
            dim=m.dim, directions=[f"{a}->{b}" for a, b in m.directions],
            default_steps=d["steps"], default_guidance=d["guidance"], default_samples=d["samples"],
            max_steps=m.max_steps, parameters=c.get("parameters", 0),
            fingerprint="sha256:" + c.get("files", {}).get("denoiser.pt", "unknown"),
            instances=self.args.workers, threads_per_instance=self.args.threads,
        )
        limits = pb2.Limits(max_items_per_request=MAX_ITEMS, max_batch_rows=self.args.max_rows,
                            max_samples=MAX_SAMPLES, max_guidance=MAX_GUIDANCE)
        return pb2.InfoResponse(models=[info], device="cpu", version="python-peer", limits=limits)

    async def Bridge(self, request, context):
        try:
            items = self._items(request)
        except Invalid as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.batcher.submit(Job(items, loop, future))
        try:
            rows = await future
        except Exception as e:  # a failed batch
            await context.abort(grpc.StatusCode.INTERNAL, f"bridging failed: {e}")
        return pb2.BridgeResponse(embeddings=[pb2.Embedding(values=r.tolist()) for r in rows])

    def _items(self, request):
        """Checks the request as diffgap's validate.rs does and prepares its rows on the host:
        L2-normalised, then normalised with the condition's statistics (scheduler.rs)."""
        m, d = self.model, self.model.card["defaults"]
        if request.model not in ("", m.card["name"]):
            raise Invalid(f"unknown model '{request.model[:64]}'")
        n = len(request.items)
        if n == 0 or n > MAX_ITEMS:
            raise Invalid(f"items has {n} entries; send 1..={MAX_ITEMS}")
        values = np.empty((n, m.dim), dtype=np.float32)
        meta = []
        for i, it in enumerate(request.items):
            f = f"items[{i}]"
            if it.HasField("raw") or not it.HasField("embedding"):
                raise Invalid(f"{f}.embedding is required (the peer takes no raw inputs)")
            if len(it.embedding.values) != m.dim:
                raise Invalid(f"{f}.embedding.values has {len(it.embedding.values)} values, the model's dimension is {m.dim}")
            values[i] = it.embedding.values
            try:
                direction = m.direction(it.source_modality, it.target_modality)
            except ValueError:
                raise Invalid(f"{f}.target_modality: the model has no direction "
                              f"{it.source_modality[:64]}->{it.target_modality[:64]}") from None
            steps = it.steps if it.HasField("steps") else d["steps"]
            guidance = np.float32(it.guidance if it.HasField("guidance") else d["guidance"])
            samples = it.samples if it.HasField("samples") else d["samples"]
            if not 1 <= steps <= m.max_steps:
                raise Invalid(f"{f}.steps must be in 1..={m.max_steps}, got {steps}")
            if not (np.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
                raise Invalid(f"{f}.guidance must be in [0, {MAX_GUIDANCE}], got {guidance}")
            if not 1 <= samples <= MAX_SAMPLES:
                raise Invalid(f"{f}.samples must be in 1..={MAX_SAMPLES}, got {samples}")
            seed = it.seed if it.HasField("seed") else row_seed(0, i)
            meta.append((direction, seed, samples, m.trajectory(steps), guidance, it.target_modality,
                         it.source_modality))
        if not np.isfinite(values).all():
            raise Invalid("every embedding value must be finite")
        with np.errstate(over="ignore"):
            norms = np.sqrt((values * values).sum(axis=1))  # in f32, as diffgap checks it
        if not (np.isfinite(norms) & (norms > 0)).all():
            raise Invalid("an embedding is zero or has a norm too large for f32")
        units = l2_rows(values)
        return [
            (m.stats[src].normalize_rows(units[i]), direction, seed, samples, traj, guidance, target)
            for i, (direction, seed, samples, traj, guidance, target, src) in enumerate(meta)
        ]


async def serve(args):
    model = Model(args.model, with_net=False)  # for validation; each worker loads its own
    batcher = Batcher(args.model, args.workers, args.threads, args.window_ms / 1e3, args.max_rows,
                      bf16=args.bf16)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.so_reuseport", 0),
    ])
    pb2_grpc.add_DiffgapServicer_to_server(Peer(model, batcher, args), server)
    port = server.add_insecure_port(args.listen)
    if port == 0:
        raise SystemExit(f"cannot listen on {args.listen}")
    await server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"listening on {host}:{port} ({args.workers} worker(s) x {args.threads} thread(s), "
          f"window {args.window_ms} ms, max {args.max_rows} rows{', bfloat16 autocast' if args.bf16 else ''})",
          flush=True)
    await server.wait_for_termination()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/default", help="the model directory diffgap serves")
    ap.add_argument("--listen", default="127.0.0.1:50061")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                    help="worker threads, each with its own module and batch (default: one per "
                         "core this process may run on, as `diffgap serve --instances 0`)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--window-ms", type=float, default=2.0, help="batching window after a worker's first request")
    ap.add_argument("--max-rows", type=int, default=256, help="rows a worker gathers for one batch")
    ap.add_argument("--bf16", action="store_true",
                    help="run the module under torch.autocast('cpu', bfloat16)")
    args = ap.parse_args()
    if args.workers < 1 or args.threads < 1 or args.max_rows < 1 or args.window_ms < 0:
        raise SystemExit("--workers, --threads and --max-rows must be at least 1, --window-ms at least 0")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
