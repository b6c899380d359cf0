#!/usr/bin/env python3
"""Retrieval service for capsim verify: hnswlib HNSW index behind uvicorn + starlette.

Subcommands
  build  build the index once and save it (workers only load it):
           python search_service.py build --dir DIR [--vectors X.npy | --n 50000 --dim 384] [--seed 0]
  serve  run the HTTP service with W worker processes, or one process whose W search
         threads share one index (127.0.0.1 only):
           python search_service.py serve --dir DIR --port 8090 --workers 2
           python search_service.py serve --dir DIR --port 8090 --threads 2 [--ef 1000]
  bench  loopback client: latency of /search vs in-process knn_query alone:
           python search_service.py bench --dir DIR --port 8090 --requests 500

Index: hnswlib, space='cosine', M=16, ef_construction=100, ef=50, one search
thread per worker (set_num_threads(1)); parallelism from worker processes or, with
--threads, from a pool of search threads over one shared index.

API
  GET  /health                      -> {"status":"ok","n":..,"dim":..,"pid":..}
  POST /search {"query_id": i, "k": 5}        (primary)
  POST /search {"vector": [..dim floats..], "k": 5}   (also accepted)
       -> {"ids":[..], "distances":[..], "search_us": <in-process knn_query time>,
           "cpu_us": <the process's CPU time so far, all threads>}

Why query_id is the primary form: the vector comes from an upstream embedding
model that capsim models as a separate stage; sending it as JSON text from a
Python client adds ~dim*20 bytes and a JSON encode/parse of dim floats on both
ends, which is an artefact of the test client rather than of the retrieval
stage. query_id selects row i % Q of a fixed, deterministic query set that
every worker holds (queries.npy in DIR). The vector form is kept so the JSON
cost can be measured (bench --mode vector) rather than guessed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

M = 16
EF_CONSTRUCTION = 100
EF_SEARCH = 50
SPACE = "cosine"
N_QUERIES = 1000


def _paths(d):
    return (os.path.join(d, "index.bin"), os.path.join(d, "meta.json"), os.path.join(d, "queries.npy"))


# ----------------------------------------------------------------------------- build
def build(args) -> int:
    import hnswlib  # deferred: a third-party library only this subcommand needs

    os.makedirs(args.dir, exist_ok=True)
    idx_path, meta_path, q_path = _paths(args.dir)
    rng = np.random.Generator(np.random.PCG64(args.seed))
    if args.vectors:
        data = np.load(args.vectors, mmap_mode="r").astype(np.float32)
        n, dim = data.shape
        source = os.path.abspath(args.vectors)
    else:
        n, dim = args.n, args.dim
        data = rng.standard_normal((n, dim), dtype=np.float32)
        source = f"gaussian(n={n}, dim={dim}, seed={args.seed})"
    # Deterministic query set (separate stream so it does not depend on n).
    qrng = np.random.Generator(np.random.PCG64(args.seed + 1))
    queries = qrng.standard_normal((N_QUERIES, dim), dtype=np.float32)

    index = hnswlib.Index(space=SPACE, dim=dim)
    index.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=args.seed)
    index.set_num_threads(args.threads)
    t0 = time.perf_counter()
    index.add_items(data, np.arange(n))
    t_build = time.perf_counter() - t0
    index.save_index(idx_path)
    np.save(q_path, queries)

    # Recall@5 of the served configuration on 200 queries (brute force ground truth).
    index.set_ef(EF_SEARCH)
    nq = 200
    labels, _ = index.knn_query(queries[:nq], k=5)
    dn = data / np.linalg.norm(data, axis=1, keepdims=True)
    qn = queries[:nq] / np.linalg.norm(queries[:nq], axis=1, keepdims=True)
    truth = np.argsort(-(qn @ dn.T), axis=1)[:, :5]
    recall = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(labels, truth)]))

    meta = dict(
        n=int(n),
        dim=int(dim),
        space=SPACE,
        M=M,
        ef_construction=EF_CONSTRUCTION,
        ef=EF_SEARCH,
        seed=args.seed,
        source=source,
        build_s=round(t_build, 2),
        build_threads=args.threads,
        recall_at_5=round(recall, 4),
        hnswlib=getattr(hnswlib, "__version__", "0.8.0"),
    )
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))
    return 0


# ----------------------------------------------------------------------------- app
class _State:
    index: Any = None
    queries: Any = None
    meta: Any = None
    pool: Any = None  # ThreadPoolExecutor with --threads, else None (search on the event loop)


def _knn(q, k):
    t0 = time.perf_counter()
    labels, dists = _State.index.knn_query(q, k=k)
    return labels, dists, (time.perf_counter() - t0) * 1e6


def _load(d):
    import hnswlib  # deferred: a third-party library only this subcommand needs

    idx_path, meta_path, q_path = _paths(d)
    with open(meta_path) as f:
        meta = json.load(f)
    index = hnswlib.Index(space=meta["space"], dim=meta["dim"])
    index.load_index(idx_path, max_elements=meta["n"])
    ef = int(os.environ.get("CAPSIM_SEARCH_EF", EF_SEARCH))
    index.set_ef(ef)
    index.set_num_threads(1)
    meta = dict(meta, ef=ef)
    threads = int(os.environ.get("CAPSIM_SEARCH_THREADS", "0"))
    if threads > 0:
        _State.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="search")
    _State.index, _State.queries, _State.meta = index, np.load(q_path), meta


def make_app():
    from starlette.applications import Starlette  # deferred: a third-party library only this subcommand needs
    from starlette.responses import JSONResponse  # deferred: a third-party library only this subcommand needs
    from starlette.routing import Route  # deferred: a third-party library only this subcommand needs

    d = os.environ.get("CAPSIM_SEARCH_DIR")
    if d and _State.index is None:
        _load(d)  # once per worker process, at import time

    async def health(request):
        m = _State.meta
        return JSONResponse({"status": "ok", "n": m["n"], "dim": m["dim"], "pid": os.getpid()})

    async def search(request):
        body = await request.json()
        k = int(body.get("k", 5))
        if "query_id" in body:
            q = _State.queries[int(body["query_id"]) % len(_State.queries)]
        elif "vector" in body:
            q = np.asarray(body["vector"], dtype=np.float32)
            if q.shape != (_State.meta["dim"],):
                return JSONResponse({"error": f"vector must have dim {_State.meta['dim']}"}, 400)
        else:
            return JSONResponse({"error": "need query_id or vector"}, 400)
        if _State.pool is None:
            # CPU-bound and short (~0.1-1 ms): run inline on the event loop. One
            # request at a time per worker, like a real single-threaded worker.
            labels, dists, us = _knn(q, k)
        else:
            # --threads W: one index shared by W search threads (hnswlib releases the GIL
            # in knn_query); requests queue FIFO for a free thread.
            labels, dists, us = await asyncio.get_running_loop().run_in_executor(_State.pool, _knn, q, k)
        # cpu_us: the process's CPU time so far (every thread): between two answers on one
        # keep-alive connection, back to back, the service's whole CPU for one request.
        cpu_us = round(time.process_time() * 1e6)
        return JSONResponse(
            {"ids": labels[0].tolist(), "distances": dists[0].tolist(), "search_us": round(us, 1), "cpu_us": cpu_us}
        )

    return Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/search", search, methods=["POST"])])


app = make_app() if os.environ.get("CAPSIM_SEARCH_DIR") else None


def serve(args) -> int:
    import uvicorn  # deferred: a third-party library only this subcommand needs

    os.environ["CAPSIM_SEARCH_DIR"] = os.path.abspath(args.dir)
    os.environ["CAPSIM_SEARCH_EF"] = str(args.ef)
    os.environ["CAPSIM_SEARCH_THREADS"] = str(args.threads)
    if args.threads > 0 and args.workers > 1:
        print("error: --threads shares one index in one process; give --workers 1", file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    from uvicorn.supervisors import Multiprocess  # deferred: a third-party library only this subcommand needs

    config = uvicorn.Config(
        "search_service:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=600,  # a closed-loop user keeps its connection across think times
    )
    # uvicorn binds the shared listening socket with proto=0, so asyncio's
    # _set_nodelay() (which checks proto == IPPROTO_TCP) skips the accepted
    # sockets; uvicorn's h11 writes headers and body separately, and Nagle +
    # the client's delayed ACK then add ~40 ms to every keep-alive response.
    # Linux accepted sockets inherit TCP_NODELAY from the listener: set it there.
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    shape = f"1 process, {args.threads} search threads" if args.threads else f"{args.workers} worker process(es)"
    print(f"search service: 127.0.0.1:{args.port}, {shape}, ef {args.ef}, index {args.dir}", flush=True)
    if args.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        config.load_app()
        uvicorn.Server(config).run(sockets=[sock])
    return 0


# ----------------------------------------------------------------------------- bench
def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def bench(args) -> int:

    _load(args.dir)
    q = _State.queries
    # In-process search alone (same process as the client; 1 thread).
    t_in = []
    for i in range(args.requests):
        t0 = time.perf_counter()
        _State.index.knn_query(q[i % len(q)], k=args.k)
        t_in.append((time.perf_counter() - t0) * 1e3)

    conn = http.client.HTTPConnection("127.0.0.1", args.port)  # keep-alive
    hdr = {"Content-Type": "application/json"}

    def call(body):
        t0 = time.perf_counter()
        # body must be bytes: http.client then sends headers+body in ONE send();
        # with str it does two sends and Nagle + delayed ACK add ~40 ms.
        conn.request("POST", "/search", body=body, headers=hdr)
        r = conn.getresponse()
        data = r.read()
        dt = (time.perf_counter() - t0) * 1e3
        assert r.status == 200, data
        return dt, json.loads(data)

    out = {"meta": _State.meta, "requests": args.requests, "k": args.k}
    # Warm-up (also distributes across workers).
    for i in range(20):
        call(json.dumps({"query_id": i, "k": args.k}).encode())
    for mode in ("query_id", "vector"):
        lat, srv = [], []
        for i in range(args.requests):
            if mode == "query_id":
                body = json.dumps({"query_id": i, "k": args.k}).encode()
            else:  # client-side encode included in the timing
                t0 = time.perf_counter()
                body = json.dumps({"vector": q[i % len(q)].tolist(), "k": args.k}).encode()
                enc = (time.perf_counter() - t0) * 1e3
            dt, resp = call(body)
            if mode == "vector":
                dt += enc
            lat.append(dt)
            srv.append(resp["search_us"] / 1e3)
        out[mode] = {
            "http_p50_ms": round(_pct(lat, 50), 3),
            "http_p95_ms": round(_pct(lat, 95), 3),
            "http_mean_ms": round(float(np.mean(lat)), 3),
            "server_search_p50_ms": round(_pct(srv, 50), 3),
            "server_search_p95_ms": round(_pct(srv, 95), 3),
            "overhead_p50_ms": round(_pct(lat, 50) - _pct(srv, 50), 3),
        }
    out["inprocess_search_p50_ms"] = round(_pct(t_in, 50), 3)
    out["inprocess_search_p95_ms"] = round(_pct(t_in, 95), 3)
    print(json.dumps(out, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--dir", required=True)
    b.add_argument("--vectors", help=".npy float array (N, dim); default: Gaussian")
    b.add_argument("--n", type=int, default=50000)
    b.add_argument("--dim", type=int, default=384)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=1, help="build threads (1 = deterministic graph)")
    s = sub.add_parser("serve")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, default=8090)
    s.add_argument("--workers", type=int, default=1, help="worker processes, each with its own copy of the index")
    s.add_argument("--threads", type=int, default=0, help="W > 0: one process, one index, W search threads")
    s.add_argument("--ef", type=int, default=EF_SEARCH, help="hnsw ef at query time (recall and cost)")
    c = sub.add_parser("bench")
    c.add_argument("--dir", required=True)
    c.add_argument("--port", type=int, default=8090)
    c.add_argument("--requests", type=int, default=500)
    c.add_argument("--k", type=int, default=5)
    a = p.parse_args(argv)
    return {"build": build, "serve": serve, "bench": bench}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
