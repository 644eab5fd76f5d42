#!/usr/bin/env python3
"""The official `openai` Python client against diffgap's OpenAI-compatible POST /v1/embeddings
(the HTTP listener, config `http_listen`), checked against a plain HTTP call of the same route.

    python examples/python/openai_client.py --base-url http://127.0.0.1:8080/v1 --token "$TOKEN"

Checks: the client's default call (it asks for base64 and decodes it), encoding_format "float"
and "base64", the cross-modal extension through extra_body (bridge_to), an unknown model
(NotFoundError) and, when a token is given, a call without it (AuthenticationError). Exits
non-zero, saying why, when a call fails or an answer is wrong. CI runs it against the staged
server (scripts/ops-check.sh).
"""

import argparse
import base64
import json
import math
import struct
import sys
import urllib.request

import openai

TEXTS = ["a dog barking in the distance", "rain on a tin roof", "a church bell"]
TOL = 1e-5


def fail(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}")


def plain_call(base_url, token, path, body=None):
    """The reference: the route called with urllib, no client library."""
    req = urllib.request.Request(base_url.rstrip("/") + path, method="POST" if body else "GET")
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def close(a, b, what):
    if len(a) != len(b):
        fail(f"{what}: {len(a)} values vs {len(b)}")
    worst = max(abs(x - y) for x, y in zip(a, b))
    if worst > TOL:
        fail(f"{what}: differs by {worst}")


def unit_norm(v, what):
    n = math.sqrt(sum(x * x for x in v))
    if abs(n - 1.0) > 1e-4:
        fail(f"{what}: norm {n}, not unit length")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--token", default="", help="bearer token (the server's auth tokens)")
    args = p.parse_args()

    info = plain_call(args.base_url, args.token, "/info")
    model = info["models"][0]["name"]
    dim = info["models"][0]["dim"]
    reference = plain_call(args.base_url, args.token, "/embeddings",
                           {"model": model, "input": TEXTS, "encoding_format": "float"})
    want = [d["embedding"] for d in reference["data"]]
    ok(f"reference call: {len(want)} embeddings of {dim} values from model {model!r}")

    client = openai.OpenAI(base_url=args.base_url, api_key=args.token or "no-token")
    default = client.embeddings.create(model=model, input=TEXTS)
    if [d.index for d in default.data] != list(range(len(TEXTS))):
        fail(f"indices {[d.index for d in default.data]}")
    if default.model != model or default.object != "list":
        fail(f"model {default.model!r}, object {default.object!r}")
    for i, d in enumerate(default.data):
        if d.object != "embedding" or len(d.embedding) != dim:
            fail(f"data[{i}]: object {d.object!r}, {len(d.embedding)} values")
        unit_norm(d.embedding, f"data[{i}]")
        close(d.embedding, want[i], f"default call (base64 decoded by the client), data[{i}]")
    if not (0 < default.usage.prompt_tokens == default.usage.total_tokens):
        fail(f"usage {default.usage}")
    if default.usage.prompt_tokens != reference["usage"]["prompt_tokens"]:
        fail(f"usage {default.usage} vs the reference's {reference['usage']}")
    ok(f"client.embeddings.create (the client's base64, decoded): {len(TEXTS)} x {dim}, "
       f"usage {default.usage.prompt_tokens} tokens")

    floats = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    for i, d in enumerate(floats.data):
        close(d.embedding, want[i], f"encoding_format=float, data[{i}]")
    ok("encoding_format=float matches the reference")

    b64 = client.embeddings.create(model=model, input=TEXTS[0], encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)
    values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    close(values, want[0], "encoding_format=base64 (little-endian f32)")
    ok("encoding_format=base64: little-endian f32, matches the reference")

    target = [m for m in info["models"][0]["modalities"] if m != "text"][0]
    extension = {"bridge_to": target, "seed": 7, "steps": 4}
    bridged = client.embeddings.create(model=model, input=TEXTS[:1], encoding_format="float",
                                       extra_body=extension)
    ref = plain_call(args.base_url, args.token, "/embeddings",
                     {"model": model, "input": TEXTS[:1], "encoding_format": "float", **extension})
    close(bridged.data[0].embedding, ref["data"][0]["embedding"], "extra_body bridge_to")
    unit_norm(bridged.data[0].embedding, "bridged")
    same = sum(x * y for x, y in zip(bridged.data[0].embedding, want[0]))
    if same > 0.999:
        fail(f"bridge_to={target!r} returned the text embedding itself (cos {same})")
    ok(f"extra_body bridge_to={target!r}: bridged (cos to the text embedding {same:.3f}), "
       "matches the reference")

    try:
        client.embeddings.create(model="no-such-model", input="x")
        fail("an unknown model was accepted")
    except openai.NotFoundError as e:
        if e.code != "model_not_found":
            fail(f"unknown model: code {e.code!r}")
    ok("unknown model: NotFoundError, code model_not_found")

    if args.token:
        anonymous = openai.OpenAI(base_url=args.base_url, api_key="wrong-token")
        try:
            anonymous.embeddings.create(model=model, input="x")
            fail("a wrong token was accepted")
        except openai.AuthenticationError:
            pass
        ok("wrong token: AuthenticationError")


if __name__ == "__main__":
    main()
