"""The writer's per-result CPU before its DuckDB write: take the Celery message apart, check its signature, decode
the result; print JSON microseconds per result.

The messages are the ones :func:`workers.tasks.send_result` pushes (signed ``record_result``, built by
:func:`accelerate_core.celery_message.build`), of the synthetic results ``bench_writer_scale.py`` sends (3 shapes x
50 samples, 10 measurement rows, a generated test the size of the shipped template: about 20 KB each). Each phase
calls what :func:`workers.writer.process_batch` calls for such a message:

- ``envelope``: :func:`workers.writer.message_body` (the outer JSON, base64);
- ``verify``: :func:`workers.writer.signed_result` (the body's JSON parsed once, the HMAC over the result's bytes
  as they came);
- ``decode``: :func:`accelerate_core.wire.decode` of the ``JobResult``.

Before (the parent of the commit that added ``signed_result``: the body parsed whole by ``decode_message``, then
the HMAC over the result encoded again as canonical JSON), at load average 3.5-4.4: envelope 196, verify 200
(canonical re-encode), decode 260 (before compiled decoders) / 69 us per result.

Figures are CPU time of this process (best of ``--rounds`` passes over the same messages), so other processes on a
shared machine inflate them less; the load average is reported with them. ``json_loads_us``, measured in the same
run, is the stdlib parsing the message's body once (what no decoding can go under without another parser):
``ratio_to_json_loads`` compares runs made under different loads.

Usage: ``python benchmarks/bench_decode.py [--results 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_writer_scale import results_of, synthetic_run  # noqa: E402

from accelerate_core import celery_message, wire  # noqa: E402
from accelerate_core.constants import TASK_RECORD_RESULT  # noqa: E402
from accelerate_core.contracts import JobResult  # noqa: E402
from accelerate_core.signing import FleetKey  # noqa: E402
from workers.writer import message_body, signed_result  # noqa: E402


def messages(key: FleetKey, n: int) -> list[bytes]:
    """``n`` signed ``record_result`` messages as a worker pushes them."""
    out = []
    for result in results_of(synthetic_run("decode", n)):
        signed = key.envelope(TASK_RECORD_RESULT, "result", wire.encode(result))
        out.append(celery_message.build(TASK_RECORD_RESULT, signed, queue="results", kwargsrepr="{}"))
    return out


def cpu_us(fn: Callable[[Any], object], items: Sequence[Any], rounds: int) -> tuple[float, list[Any]]:
    """The best CPU microseconds per item of ``fn`` over ``items`` in ``rounds`` passes, and its outputs."""
    best, outs = float("inf"), []
    for _ in range(rounds):
        start = time.process_time()
        outs = [fn(item) for item in items]
        best = min(best, time.process_time() - start)
    return best / len(items) * 1e6, outs


def body_of(raw: bytes) -> bytes:
    return base64.b64decode(json.loads(raw)["body"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=1000, help="messages per pass")
    parser.add_argument("--rounds", type=int, default=3, help="best of N passes")
    args = parser.parse_args(argv)
    if args.results < 1 or args.rounds < 1:
        parser.exit(2, "bench_decode.py: --results and --rounds must be at least 1\n")

    key = FleetKey(secrets.token_bytes(32))
    raws = messages(key, args.results)
    bodies = [body_of(raw) for raw in raws]
    json_us, _ = cpu_us(json.loads, bodies, args.rounds)
    envelope_us, decoded = cpu_us(message_body, raws, args.rounds)
    verify_us, payloads = cpu_us(lambda d: signed_result(key, d[1]), decoded, args.rounds)
    assert all(p is not None for p in payloads), "a worker's result did not take the writer's fast path"
    decode_us, rows = cpu_us(lambda p: wire.decode(JobResult, p), payloads, args.rounds)
    assert all(isinstance(r, JobResult) for r in rows)
    total = envelope_us + verify_us + decode_us
    result = {
        "benchmark": "writer_decode",
        "results": args.results,
        "message_bytes": round(sum(map(len, raws)) / len(raws)),
        "us_per_result": {
            "envelope": round(envelope_us, 1),
            "verify": round(verify_us, 1),
            "decode": round(decode_us, 1),
            "total": round(total, 1),
        },
        "json_loads_us": round(json_us, 1),
        "ratio_to_json_loads": round(total / json_us, 2),
        "results_per_cpu_s": round(1e6 / total),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "rounds": args.rounds,
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
