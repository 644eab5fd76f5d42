#!/usr/bin/env python3
"""A diffgap catalog in Qdrant, ranked as diffgap's own Rank ranks it.

    diffgap catalog export --model models/default --catalog catalogs/sounds --out export/
    python examples/qdrant/qdrant_rank.py --export export/ --base-url http://127.0.0.1:8080 \
        --token "$TOKEN" [--qdrant-url http://qdrant:6333]

Loads the export (`diffgap catalog export`) into a Qdrant collection with two named vectors per
point: `raw` (the entry's embedding) and `reverse_text` (the entry bridged into text space);
the official qdrant-client in local mode (in-process, the same client API) unless --qdrant-url
names a Qdrant server or cluster. Per query text, asks diffgap (HTTP/JSON API) for the raw text
vector q (/v1/embed) and the bridged one B(q) (/v1/bridge, with the options and seed the export
records, so that B(q) is the one Rank makes), then ranks in each weighted Rank mode:

    contrastive  cos(q, raw)        one Qdrant search
    bridged      cos(B(q), raw)     one Qdrant search
    reverse      cos(q, reverse_text)
    fused        w_c cos(q, raw) + w_b cos(B(q), raw) + w_r cos(q, reverse_text), the model's
                 weights from the export: one search per weighted term, their top lists fused

Fusing top lists is exact by the threshold algorithm: the union of the lists is re-scored on
every term (a search restricted to those ids), and the lists are deepened until the k-th fused
score is at least the best score an entry in none of them could have (the sum of each list's
last score, weighted). Each top k is checked against diffgap's POST /v1/rank on the same catalog
(same ids in the same order, every score within --tolerance). Exits non-zero, saying why, on any
difference. CI runs it against the staged server (scripts/ops-check.sh).
"""

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from qdrant_client import QdrantClient, models

QUERIES = ["a dog barking", "a church bell ringing", "birds singing", "a car engine starting",
           "water dripping"]
MODES = ["contrastive", "bridged", "reverse", "fused"]


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}")


def call(base_url, token, path, body=None):
    req = urllib.request.Request(base_url.rstrip("/") + path, method="POST" if body else "GET")
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        fail(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def read_export(path):
    meta = json.loads((path / "export.json").read_text())
    if meta.get("format") != 1:
        fail(f"{path}/export.json: format {meta.get('format')}, this example reads format 1")
    return meta


def load(client, collection, path, meta, batch=256):
    """Every entry as one point: id = its row, named vectors, the catalog id as payload."""
    if client.collection_exists(collection):
        client.delete_collection(collection)
    client.create_collection(collection, vectors_config={
        name: models.VectorParams(size=meta["dim"], distance=models.Distance.COSINE)
        for name in meta["vectors"]})
    points = []
    with open(path / "entries.jsonl") as f:
        for line in f:
            e = json.loads(line)
            points.append(models.PointStruct(
                id=e["index"], vector={name: e[name] for name in meta["vectors"]},
                payload={"id": e["id"], "model_fingerprint": e["model_fingerprint"]}))
            if len(points) == batch:
                client.upsert(collection, points, wait=True)
                points = []
    if points:
        client.upsert(collection, points, wait=True)
    return client.count(collection, exact=True).count


def search(client, collection, vector, using, limit, ids=None):
    """[(point id, cosine)], best first; only among `ids` when given."""
    flt = models.Filter(must=[models.HasIdCondition(has_id=list(ids))]) if ids else None
    hits = client.query_points(collection, query=vector, using=using, limit=limit,
                               query_filter=flt, with_payload=False).points
    return [(h.id, h.score) for h in hits]


def fused_top_k(client, collection, terms, k, entries):
    """The top k of sum(w * cos(vector, using)) over `terms` [(name, w, vector, using)]:
    [(point id, fused, {term: cos})], best first, ties by row as Rank's stable sort; and the
    depth of the lists it took."""
    depth = min(k, entries)
    while True:
        lists = {name: search(client, collection, v, using, depth) for name, _, v, using in terms}
        seen = {i for hits in lists.values() for i, _ in hits}
        scores = {name: dict(hits) for name, hits in lists.items()}
        for name, _, v, using in terms:
            missing = seen - scores[name].keys()
            if missing:
                scores[name].update(search(client, collection, v, using, len(missing), missing))
        fused = sorted(((sum(w * scores[name][i] for name, w, _, _ in terms), i) for i in seen),
                       key=lambda s: (-s[0], s[1]))[:k]
        # An entry in none of the lists scores at most each list's last score on its term.
        bound = sum(w * lists[name][-1][1] for name, w, _, _ in terms)
        if depth >= entries or fused[-1][0] >= bound:
            return [(i, s, {name: scores[name][i] for name, _, _, _ in terms})
                    for s, i in fused], depth
        depth = min(2 * depth, entries)


def weights_of(mode, plan):
    if mode == "fused":
        return plan["fused"]
    return {t: float(t == mode) for t in ("contrastive", "bridged", "reverse")}


def check(mode, text, got, want, names, tol):
    """Qdrant's top k against Rank's: ids in order, the final and the component scores. Two
    candidates whose scores tie within the tolerance may come in either order, or either one
    may take the last place: where the ids differ, the scores at that rank must still agree."""
    what = f"{mode} {text!r}"
    got_ids = [names[i] for i, _, _ in got]
    want_ids = [r["id"] for r in want]
    differ = [i for i, (a, b) in enumerate(zip(got_ids, want_ids)) if a != b]
    tied = len(got_ids) == len(want_ids) and all(
        abs(got[i][1] - want[i]["score"]) <= tol for i in differ)
    if not tied:
        fail(f"{what}: Qdrant ranks {got_ids}, diffgap {want_ids} "
              f"(scores {[round(s, 6) for _, s, _ in got]} vs {[r['score'] for r in want]})")
    worst = 0.0
    for i, ((_, score, terms), r) in enumerate(zip(got, want)):
        pairs = [(score, r["score"])]
        if i not in differ:
            pairs += [(terms[t], r[t]) for t in terms if r.get(t) is not None]
            if len(pairs) != len(terms) + 1:
                fail(f"{what}: diffgap's answer lacks a component score: {r}")
        worst = max([worst] + [abs(a - b) for a, b in pairs])
    if worst > tol:
        fail(f"{what}: a score differs by {worst:.2e} (tolerance {tol})")
    return worst


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, required=True, help="a `diffgap catalog export` directory")
    p.add_argument("--base-url", required=True, help="diffgap's HTTP listener, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", default="", help="bearer token (the server's auth tokens)")
    p.add_argument("--qdrant-url", default="", help="a Qdrant server or cluster (default: local mode, in memory)")
    p.add_argument("--qdrant-api-key", default=None)
    p.add_argument("--collection", default="", help="default: the catalog's name")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=1e-5, help="largest score difference")
    p.add_argument("--query", action="append", help="a query text (repeatable; default: five)")
    args = p.parse_args()

    meta = read_export(args.export)
    served = call(args.base_url, args.token, "/v1/info")["models"]
    model = next((m for m in served if m["name"] == meta["model"]), None)
    if model is None or model["fingerprint"] != meta["model_fingerprint"]:
        fail(f"the export is for model {meta['model']!r} {meta['model_fingerprint']}; the server "
             f"serves {[(m['name'], m['fingerprint']) for m in served]}")
    catalogs = {c["name"]: c for c in model["catalogs"]}
    if catalogs.get(meta["catalog"], {}).get("entries") != meta["entries"]:
        fail(f"the server does not serve catalog {meta['catalog']!r} of {meta['entries']} entries")
    ok(f"export of catalog {meta['catalog']!r} ({meta['entries']} entries) for the served model "
       f"{meta['model']!r} {meta['model_fingerprint'][:19]}...")

    client = (QdrantClient(url=args.qdrant_url, api_key=args.qdrant_api_key)
              if args.qdrant_url else QdrantClient(":memory:"))
    collection = args.collection or meta["catalog"]
    n = load(client, collection, args.export, meta)
    if n != meta["entries"]:
        fail(f"Qdrant holds {n} points, the export {meta['entries']} entries")
    ok(f"Qdrant ({args.qdrant_url or 'local mode'}) collection {collection!r}: {n} points, "
       f"named vectors {sorted(meta['vectors'])}")

    plan = meta["queries"]["text"]
    bridge = plan["bridge"]
    for text in args.query or QUERIES:
        q = call(args.base_url, args.token, "/v1/embed",
                 {"model": meta["model"], "inputs": [{"text": text}]})["embeddings"][0]["embedding"]
        bq = call(args.base_url, args.token, "/v1/bridge", {"model": meta["model"], "items": [{
            "source_modality": "text", "target_modality": meta["modality"], "embedding": q,
            **bridge}]})["embeddings"][0]
        vectors = {"contrastive": (q, "raw"), "bridged": (bq, "raw"),
                   "reverse": (q, plan["reverse_vector"])}
        for mode in MODES:
            w = weights_of(mode, plan)
            if w is None or (w["reverse"] and not plan["reverse_vector"]):
                print(f"skipped: {mode}: the export has no fused weights or reverse vectors")
                continue
            if any(x < 0 for x in w.values()):
                fail(f"{mode}: negative weights {w}; the threshold bound needs non-negative ones")
            terms = [(t, x, *vectors[t]) for t, x in w.items() if x != 0]
            if not terms:
                fail(f"{mode}: every weight is zero: {w}")
            got, depth = fused_top_k(client, collection, terms, args.top_k, n)
            want = call(args.base_url, args.token, "/v1/rank", {
                "model": meta["model"], "query_modality": "text", "raw_query": {"text": text},
                "catalog": meta["catalog"], "mode": mode, "top_k": args.top_k,
                "seed": meta["seed"]})["results"]
            names = {r.id: r.payload["id"] for r in client.retrieve(collection, [i for i, _, _ in got])}
            worst = check(mode, text, got, want, names, args.tolerance)
            ok(f"{mode:<11} {text!r}: top {len(got)} = diffgap Rank's (ids in order, scores within "
               f"{worst:.1e}; {len(terms)} list(s) {depth} deep): {[names[i] for i, _, _ in got[:3]]}...")


if __name__ == "__main__":
    main()
