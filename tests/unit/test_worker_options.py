"""``accel worker -Q/--queues``, ``-n/--hostname`` and ``-- <celery worker options>``: checked, then passed on."""

from __future__ import annotations

import pytest

from accelerate_core.config import Settings
from accelerate_core.errors import ConfigError, HardwareUnavailableError
from scheduler.cli.fleet import _named_plan, celery_options, parse_queues
from workers.__main__ import _parse


def test_queues_default_to_the_hardware_queue_and_are_checked_names() -> None:
    settings = Settings()
    assert parse_queues(None, "cuda", settings) == ["hw.cuda"]
    assert parse_queues(" hw.cpu , hw.cpu-big,", "cpu", settings) == ["hw.cpu", "hw.cpu-big"]
    for bad, says in ((",", "names no queue"), ("hw.cpu,a:b", "is not a valid name"), ("results", "writer's")):
        with pytest.raises(ConfigError, match=says):
            parse_queues(bad, "cpu", settings)


def test_celery_options_pass_through_except_those_accel_sets() -> None:
    assert celery_options(["--max-tasks-per-child", "5", "--prefetch-multiplier=1"]) == [
        "--max-tasks-per-child", "5", "--prefetch-multiplier=1",
    ]  # fmt: skip
    for own in (["-P", "solo"], ["--pool=threads"], ["-Qx"], ["--hostname", "a@b"], ["-c", "4"]):
        with pytest.raises(ConfigError, match="set by accel worker itself"):
            celery_options(own)


def test_a_hostname_names_exactly_one_node_not_a_live_one() -> None:
    plan = [(0, "cpu0@h")]
    assert _named_plan(None, plan, []) == plan
    assert _named_plan("smoke@h", plan, ["cpu0@h"]) == [(0, "smoke@h")]
    with pytest.raises(ConfigError, match="2 would start"):
        _named_plan("smoke@h", [(0, "cuda0@h"), (1, "cuda1@h")], [])
    with pytest.raises(HardwareUnavailableError, match="already running"):
        _named_plan("smoke@h", plan, ["smoke@h"])


def test_the_node_process_takes_queues_and_celery_options_after_the_separator() -> None:
    argv = ["worker", "--hardware", "cpu", "--queues", "hw.cpu,hw.x", "--", "--max-tasks-per-child", "5"]
    args = _parse(argv)
    assert (args.queues, args.celery_args) == ("hw.cpu,hw.x", ["--max-tasks-per-child", "5"])
    assert _parse(["worker", "--hardware", "cpu", "--"]).celery_args == []
