"""``python -m workers worker|writer``: start one pinned Celery worker node, or the results writer.

``accel worker`` and ``accel writer`` (in ``scheduler``, which never imports this package) start these
as subprocesses; the settings reach them through ``ACCEL_CONFIG`` / ``ACCEL_*`` variables. The device
environment is set here first thing, before Celery starts and long before anything imports torch
(the main process never does: jobs run in the fork server's children).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from accelerate_core.config import Settings
from accelerate_core.constants import HARDWARE_KINDS, WORKER_KINDS
from accelerate_core.errors import AccelerateError
from accelerate_core.names import check_node_name
from workers import pinning

if TYPE_CHECKING:
    import redis

    from accelerate_core.service import ServiceConfig
    from workers.keeper import Keeper, WriterLock

logger = logging.getLogger(__name__)

_COMMON_FLAGS = ("--without-gossip", "--without-mingle")
# Gossip makes every worker read every other worker's events (costly with task events on); mingle
# delays start-up by a broadcast round. Neither is needed: the writer and Redis hold the state.


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="one pinned worker node consuming hw.<kind>")
    w.add_argument("--hardware", choices=WORKER_KINDS, required=True)
    w.add_argument("--device", type=int, default=0)
    w.add_argument("--node", default=None, help="node name (default <hardware><device>@<host>)")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--threads", type=int, default=0)
    w.add_argument("--loglevel", default="INFO")
    w.add_argument(
        "--queues", default=None, help="comma-separated queues (default hw.<kind> and hw.<kind>.<device model>)"
    )
    w.add_argument("celery_args", nargs="*", help="Celery worker options, after --")
    r = sub.add_parser("writer", help="the results writer consuming the results queue")
    r.add_argument("--node", default=None)
    r.add_argument("--loglevel", default="INFO")
    return parser.parse_args(argv)


def run_worker(args: argparse.Namespace) -> int:
    """Pin this process, then run a prefork Celery worker on the hardware's queue."""
    pin = pinning.Pinning(args.hardware, args.device, args.threads)
    node = check_node_name(args.node or pin.node_name(), "--node")
    pinning.apply(pin)
    os.environ[pinning.NODE_ENV] = node
    settings = Settings.load()
    from celery import signals

    from accelerate_core import broker, signing
    from workers import node as node_report
    from workers import tasks
    from workers.app import make_app

    key = signing.require_key(settings)  # before anything else: a worker without the fleet key runs nothing
    broker.verify(broker.require_url(settings))
    app = make_app(settings)
    node_report.register(key)
    # The jobs' sent events come from the scheduler; the results this node sends to the writer are
    # bookkeeping that Flower need not list (the writer does not report them either, see below).
    app.conf.task_send_sent_event = False

    def on_ready(**_: Any) -> None:
        try:
            tasks.announce(app, settings, node)
        except Exception:
            logger.exception("could not register this worker's inventory with the writer")

    signals.worker_ready.connect(on_ready, weak=False)
    signals.task_revoked.connect(tasks.record_revoked(settings, node), weak=False)
    signals.worker_process_shutdown.connect(tasks.close_runner, weak=False)
    queues = args.queues or ",".join(_default_queues(settings, args.hardware, args.device))
    argv = ["worker", "-n", node, "-Q", queues, "-P", "prefork"]
    argv += ["-c", str(max(1, args.concurrency)), "--loglevel", args.loglevel, *_COMMON_FLAGS, *args.celery_args]
    app.worker_main(argv)
    return 0


def _default_queues(settings: Settings, hardware: str, device: int) -> list[str]:
    """The kind's queue and the device model's; the model is fixed in the environment, so every job this node
    runs records the model whose queue it came from (``ACCEL_DEVICE_MODEL``)."""
    from accelerate_core.backends.device_model import DEVICE_MODEL_ENV, device_model, node_queues

    if hardware in HARDWARE_KINDS:
        os.environ[DEVICE_MODEL_ENV] = device_model(hardware, device)
    return node_queues(settings.queue_for(hardware), hardware, device)


def run_writer(args: argparse.Namespace) -> int:
    """Take the writer lock (waiting while another's is live), open the results DB and serve until signalled."""
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s: %(levelname)s/writer] %(message)s")
    settings = Settings.load()
    from accelerate_core import broker, signing
    from accelerate_core.service import ServiceConfig
    from workers import keeper, writer

    signing.require_key(settings)  # it checks run messages and re-sends lost jobs signed
    api = ServiceConfig.from_settings(settings)  # an address off loopback without a token: refuse at once
    broker.verify(broker.require_url(settings))
    client = broker.connect(broker.require_url(settings), timeout_s=5, reply_timeout_s=writer.WAIT_S + 30)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lock = keeper.WriterLock(client, settings.writer_lock_ttl_s)
    try:
        if not lock.acquire(stop):
            return 0
        from accelerate_core import dead_letters

        state = keeper.WriterState(dead_letters=dead_letters.count(client))
        with keeper.Keeper(client, settings.results_queue, state, renew=lock.renew) as beats:
            return _serve_store(settings, client, lock, beats, stop, api)
    finally:
        lock.release()
        client.close()


def _serve_store(
    settings: Settings,
    client: redis.Redis,
    lock: WriterLock,
    beats: Keeper,
    stop: threading.Event,
    api: ServiceConfig,
) -> int:
    """Open the results DB (waiting while another process holds it), host its results service, serve the queue."""
    from accelerate_core import signing
    from workers import reconciler, writer
    from workers.service import hosted_service, writer_probe

    state = beats.state
    store = writer.open_store(settings.results_db, state, stop)
    if store is None:
        return 0
    with store:
        w = writer.ResultWriter(store, settings, publish=writer.redis_publisher(client), state=state,
                                fence=lock.check, dead_letter=writer.redis_dead_letters(client, state),
                                revoke=writer.celery_revoker(settings), key=signing.require_key(settings))  # fmt: skip
        rec = reconciler.for_writer(store, client, settings)
        probe = writer_probe(client, settings.results_queue, state)
        with hosted_service(
            settings, api, version=lambda: w.commits, last_commit=lambda: w.committed_at, writer=probe
        ) as url:
            state.api_url = url  # advertised in the heartbeat: the CLI reads through it
            beats.beat()  # at once: a CLI that finds the DB held must not wait a beat for the service's address
            logger.info("writer ready: queue %s -> %s; results on %s", settings.results_queue, settings.results_db,
                        url or "no service")  # fmt: skip
            intake = writer.Intake(client, settings.results_queue)
            n = writer.serve(w, intake, stop, lock=lock, reconcile=rec.tick)
            state.api_url = None
        logger.info("writer stopped after %d messages", n)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; an AccelerateError ends it with one line and its exit code."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        return run_worker(args) if args.command == "worker" else run_writer(args)
    except AccelerateError as e:
        print(f"accel: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
