"""`accel worker`, `accel writer`, `accel flower`: the fleet's long-running processes.

The scheduler never imports ``workers``: these commands check what they can here (hardware present,
broker reachable, a Flower password set) and then start ``python -m workers ...`` or Flower as
processes of their own, with the settings passed on through ``ACCEL_CONFIG``. One node runs in place of
this process (``exec``), so signals and the exit status are its own; several are supervised here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from accelerate_core.config import Settings, is_host
from accelerate_core.constants import API_HARDWARE, WORKER_KINDS
from accelerate_core.errors import ConfigError, HardwareUnavailableError
from scheduler.cli.common import err, state

FLOWER_DEFAULT_ADDRESS = "127.0.0.1"
"""Flower binds here unless told otherwise: its ``/metrics`` and ``/healthcheck`` ignore basic auth."""


def parse_devices(raw: str | None) -> list[int] | None:
    """``"0,1"`` -> ``[0, 1]``; None stays None (every device of the kind)."""
    if raw is None or raw.strip() in ("", "all"):
        return None
    try:
        devices = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--devices {raw!r} is invalid: give indices like 0,1") from e
    if not devices or any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise ConfigError(f"--devices {raw!r} is invalid: give distinct indices >= 0, like 0,1")
    return devices


def node_plan(
    hardware: str, devices: list[int] | None, live: Sequence[str], host: str | None = None
) -> list[tuple[int, str]]:
    """The ``(device index, node name)`` of each node to start.

    CPU "devices" are slots on one machine: without ``--devices`` the first slot whose name is not live
    is taken, so a second ``accel worker --hardware cpu`` on a host starts ``cpu1@host``. An accelerator
    device belongs to one node: starting it twice is refused.

    Raises:
        HardwareUnavailableError: an accelerator device already has a live node.
    """
    host = host or socket.gethostname()
    taken = set(live)
    if hardware in ("cpu", API_HARDWARE) and devices is None:
        slot = next(i for i in range(len(taken) + 1) if f"{hardware}{i}@{host}" not in taken)
        return [(slot, f"{hardware}{slot}@{host}")]
    plan = [(d, f"{hardware}{d}@{host}") for d in (devices if devices is not None else [0])]
    busy = [name for _, name in plan if name in taken]
    if busy:
        raise HardwareUnavailableError(
            f"{', '.join(busy)} is already running: stop it first (one node per device), or pick other --devices"
        )
    return plan


def _child_env(config_file: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if config_file is not None:
        env["ACCEL_CONFIG"] = str(config_file.resolve())
    return env


def _run_nodes(commands: list[list[str]], env: dict[str, str], cwd: str | None = None) -> int:
    """Run one node in place of this process, or several as children until they all end (in ``cwd`` if given)."""
    if len(commands) == 1:
        sys.stdout.flush()
        sys.stderr.flush()
        if cwd is not None:
            os.chdir(cwd)
        os.execvpe(commands[0][0], commands[0], env)
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd) for cmd in commands]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


def _devices_checked(hardware: str, devices: list[int] | None) -> list[int] | None:
    from accelerate_core.backends import require

    if hardware not in WORKER_KINDS:
        raise ConfigError(f"--hardware {hardware!r} is unknown: use one of {', '.join(WORKER_KINDS)}")
    if hardware == API_HARDWARE:  # served endpoints: no local device to check
        return devices
    found = require(hardware, None if hardware == "cpu" else devices)
    if hardware in ("cuda", "rocm") and devices is None:
        return [d.index for d in found]
    return devices


def register(app: typer.Typer) -> None:
    """Add ``worker``, ``writer`` and ``flower`` to the root app."""
    app.command("worker", context_settings={"allow_extra_args": True})(worker)
    app.command("writer")(writer)
    app.command("flower")(flower)


OWN_CELERY_OPTIONS = (
    "-A", "--app", "-b", "--broker", "-P", "--pool", "-c", "--concurrency", "-n", "--hostname",
    "-Q", "--queues", "-X", "--exclude-queues", "--loglevel", "-l",
)  # fmt: skip
"""Celery worker options ``accel worker`` sets itself (pinning and the fleet's guarantees depend on them)."""


def parse_queues(raw: str | None, hardware: str, settings: Settings) -> list[str]:
    """``-Q a,b`` -> ``["a", "b"]`` (each a valid name); None -> the hardware's own queue."""
    from accelerate_core.names import check_name

    if raw is None:
        return [settings.queue_for(hardware)]
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    if not queues:
        raise ConfigError(f"--queues {raw!r} names no queue: give e.g. {settings.queue_for(hardware)}")
    if settings.results_queue in queues:
        raise ConfigError(f"--queues: {settings.results_queue!r} is the writer's queue: start `accel writer` for it")
    return [check_name(q, "--queues") for q in queues]


def default_queues(settings: Settings, hardware: str, index: int) -> list[str]:
    """A node's queues without ``--queues``: its kind's and its device model's (``hw.cuda``, ``hw.cuda.h100-...``)."""
    from accelerate_core.backends.device_model import node_queues

    return node_queues(settings.queue_for(hardware), hardware, index)


def celery_options(extra: Sequence[str]) -> list[str]:
    """The Celery worker options given after ``--``, refusing those ``accel worker`` sets itself."""
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in OWN_CELERY_OPTIONS or (len(name) > 2 and name[:2] in OWN_CELERY_OPTIONS and name[1] != "-"):
            raise ConfigError(
                f"celery option {name!r} after -- is set by accel worker itself: use accel worker's own options "
                "(--hardware, --devices, --concurrency, --queues, --hostname, --loglevel)"
            )
    return list(extra)


def _named_plan(name: str | None, plan: list[tuple[int, str]], live: Sequence[str]) -> list[tuple[int, str]]:
    """Apply ``-n/--hostname`` (already checked) to a one-node plan (a name for several nodes is refused)."""
    if name is None:
        return plan
    if len(plan) != 1:
        raise ConfigError(f"--hostname names one node but {len(plan)} would start: pick one device with --devices")
    if name in live:
        raise HardwareUnavailableError(f"{name} is already running: stop it first, or pick another --hostname")
    return [(plan[0][0], name)]


def worker(
    ctx: typer.Context,
    hardware: Annotated[
        str, typer.Option("--hardware", help="cpu, cuda, rocm, mps, or api (served endpoints)")
    ] = "cpu",
    devices: Annotated[str | None, typer.Option("--devices", help="device indices, e.g. 0,1 (default: all)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="jobs at once per device node")] = 1,
    queues: Annotated[
        str | None,
        typer.Option("--queues", "-Q", help="queues to consume, e.g. hw.cpu,hw.big (default: hw.<kind>, its model's)"),
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="node name NAME@HOST (one node; default <kind><i>@<host>)")
    ] = None,
    loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO",
) -> None:
    """Start one pinned Celery worker node per device, consuming hw.<kind> and hw.<kind>.<device model> (checks the
    hardware first).

    Celery worker options after ``--`` are passed on (e.g. ``-- --max-tasks-per-child 50``).
    """
    from accelerate_core.names import check_node_name

    settings = state(ctx).settings
    extra = celery_options(ctx.args)
    consumed = parse_queues(queues, hardware, settings) if queues is not None else None
    if hostname is not None:
        check_node_name(hostname, "--hostname")
    wanted = _devices_checked(hardware, parse_devices(devices))
    from accelerate_core import broker, signing
    from scheduler.remote import live_nodes

    signing.require_key(settings)
    broker.check(broker.require_url(settings))
    live = live_nodes(settings)
    nodes = _named_plan(hostname, node_plan(hardware, wanted, live), live)
    threads = max(1, (os.cpu_count() or 1) // (len(nodes) * concurrency))
    commands, lines = [], []
    for index, name in nodes:
        node_queues = consumed or default_queues(settings, hardware, index)
        cmd = [sys.executable, "-m", "workers", "worker", "--hardware", hardware, "--device", str(index)]
        cmd += ["--node", name, "--concurrency", str(concurrency), "--threads", str(threads), "--loglevel", loglevel]
        cmd += ["--queues", ",".join(node_queues), "--", *extra]
        commands.append(cmd)
        lines.append(f"{name} on {', '.join(node_queues)}")
    err.print(f"accel worker: starting {'; '.join(lines)}", markup=False)
    raise typer.Exit(_run_nodes(commands, _child_env(state(ctx).config_file)))


def writer(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option("--loglevel")] = "INFO",
) -> None:
    """Start the results writer: the one process that writes the results DB (queue results) and serves its results."""
    settings = state(ctx).settings
    from accelerate_core import broker, signing
    from accelerate_core.service import ServiceConfig

    ServiceConfig.from_settings(settings)  # an address off loopback without a token: refused before anything starts
    signing.require_key(settings)
    broker.check(broker.require_url(settings))
    cmd = [sys.executable, "-m", "workers", "writer", "--loglevel", loglevel]
    raise typer.Exit(_run_nodes([cmd], _child_env(state(ctx).config_file)))


FLOWER_CWD = "/"
"""Flower's working directory: one no user can write to, so no ``celeryconfig.py`` is picked up from it."""

FLOWER_CONTROL_WARNING = (
    "accel flower: --allow-control: every logged-in Flower user can now send tasks (run code on the workers), "
    "revoke them and shut workers down"
)
"""Printed when Flower is started with control on (it is read-only by default)."""


def flower_env(settings: Settings, address: str, port: int, *, allow_control: bool = False) -> dict[str, str]:
    """Flower's environment: only the ``FLOWER_*`` options set here, never one inherited.

    Flower turns every ``FLOWER_*`` variable into an option (and reads ``FLOWER_UNAUTHENTICATED_API``
    directly), and Celery reads ``CELERY_*``: both families are dropped from this process's environment and
    only ours are set; the fleet key is dropped too (Flower never signs). Broker and basic auth travel as
    variables, never on the command line (``ps``). ``FLOWER_CONF`` points at an empty file so no
    ``flowerconfig.py`` in the working directory is run.

    Args:
        settings: the broker and the Flower credentials.
        address: the bind address.
        port: the TCP port.
        allow_control: let logged-in users send, revoke and shut down (read-only otherwise).

    Raises:
        ConfigError: no Flower password, or no broker, is configured.
    """
    from accelerate_core import broker
    from accelerate_core.signing import KEY_ENV

    if not settings.flower_password:
        raise ConfigError(
            "Flower needs a password: set ACCEL_FLOWER_PASSWORD (or flower_password in accel.toml); "
            "without one anyone who reaches its port could read every job's arguments"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "CELERY_")) and k != KEY_ENV}
    env.update(
        CELERY_BROKER_URL=broker.require_url(settings),
        FLOWER_BASIC_AUTH=f"{settings.flower_user}:{settings.flower_password}",
        FLOWER_ADDRESS=address,
        FLOWER_PORT=str(port),
        FLOWER_READ_ONLY="false" if allow_control else "true",
        FLOWER_CONF=os.devnull,
    )
    return env


def flower(
    ctx: typer.Context,
    address: Annotated[
        str, typer.Option("--address", help="bind address; /metrics and /healthcheck are not password-protected")
    ] = FLOWER_DEFAULT_ADDRESS,
    port: Annotated[int | None, typer.Option("--port", help="default: flower_port from the settings")] = None,
    allow_control: Annotated[
        bool,
        typer.Option("--allow-control", help="let logged-in users send tasks, revoke them and shut workers down"),
    ] = False,
) -> None:
    """Start Flower on the fleet's broker: read-only, with basic auth from the settings (refuses without a password)."""
    settings = state(ctx).settings
    if port is not None:
        settings = settings.with_overrides(flower_port=port, source="--port")
    if not is_host(address):
        raise ConfigError(f"--address {address!r} is not an IP address or host name: e.g. 127.0.0.1")
    env = flower_env(settings, address, settings.flower_port, allow_control=allow_control)
    from accelerate_core import broker

    broker.check(broker.require_url(settings))
    if address not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"accel flower: binding {address}: /metrics and /healthcheck answer without a password", markup=False)
    if allow_control:
        err.print(FLOWER_CONTROL_WARNING, markup=False)
    # Celery imports a celeryconfig.py from the working directory (it puts it on sys.path itself), so Flower
    # runs in the filesystem root, with -P so that folder is not on its sys.path either.
    cmd = [sys.executable, "-P", "-m", "celery", "flower"]
    raise typer.Exit(_run_nodes([cmd], env, cwd=FLOWER_CWD))
