"""The endpoint package's logic, without a server: settings, secrets, prompts, load loops, statistics, classes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import pytest

from accelerate_core.config import endpoint_token
from accelerate_core.endpoint.classify import (
    ERR_CONNECT,
    ERR_CONNECTION_LOST,
    ERR_MALFORMED,
    ERR_REFUSED,
    ERR_TIMEOUT,
    MalformedStreamError,
    classify,
    one_line,
)
from accelerate_core.endpoint.load import run_level
from accelerate_core.endpoint.prompts import COUNTED_APPROX, COUNTED_TOKENIZER, POOL, PromptSource
from accelerate_core.endpoint.report import level_report
from accelerate_core.endpoint.sample import RequestSample, Usage
from accelerate_core.endpoint.spec import EndpointBenchConfig, EndpointTarget, Secret
from accelerate_core.errors import ConfigError

# ----------------------------------------------------------------------------- target and settings


@pytest.mark.parametrize(
    ("url", "chat"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
        ("https://h/base/v1/chat/completions", "https://h/base/v1/chat/completions"),
    ],
)
def test_the_chat_route_is_found_from_any_base_url(url, chat):
    target = EndpointTarget("x", url, "m")
    assert target.chat_url == chat
    assert target.models_url == chat.removesuffix("/chat/completions") + "/models"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://h/", "is invalid"),
        ("127.0.0.1:8000", "is invalid"),
        ("http://h:99999/", "invalid port"),
        ("http://user:pw@h:1/", "carries credentials"),
        ("http://h:1/?key=abc", "carries credentials"),
    ],
)
def test_a_bad_url_is_one_line_config_error_without_the_password(url, says):
    with pytest.raises(ConfigError, match=says) as e:
        EndpointTarget("x", url, "m")
    assert "pw" not in str(e.value) and "\n" not in str(e.value)


def test_names_and_models_are_validated():
    with pytest.raises(ConfigError, match="name"):
        EndpointTarget("bad name", "http://h:1", "m")
    with pytest.raises(ConfigError, match="model is empty"):
        EndpointTarget("x", "http://h:1", " ")


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"concurrency": (0,)}, "concurrency"),
        ({"concurrency": ()}, "concurrency"),
        ({"requests": 4, "duration_s": 1.0}, "not both"),
        ({"requests": 0}, "requests"),
        ({"duration_s": 0.0}, "duration"),
        ({"prompt_tokens": 0}, "prompt tokens"),
        ({"rate": -1.0}, "rate"),
        ({"arrival": "bursty"}, "arrival"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"warmup": 0}, "warmup"),
        ({"tokenizer": Path("/nonexistent")}, "tokenizer.json"),
    ],
)
def test_bad_bench_settings_are_config_errors(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        EndpointBenchConfig(**kwargs)


def test_requests_per_level_default_and_modes():
    config = EndpointBenchConfig(concurrency=(1, 8))
    assert [config.requests_for(c) for c in (1, 8)] == [16, 32]
    assert EndpointBenchConfig(requests=3).requests_for(64) == 3
    assert EndpointBenchConfig(duration_s=2.0).requests_for(1) is None
    assert EndpointBenchConfig().mode == "closed-loop"
    assert EndpointBenchConfig(rate=2.5, arrival="fixed").mode == "open-loop fixed 2.5/s"


# ----------------------------------------------------------------------------- credentials


def test_a_secret_never_prints_and_masks_every_spelling():
    secret = Secret("s3cr/et+1")
    assert "s3cr" not in f"{secret!r} {secret} {secret!s}"
    echoed = f"a s3cr/et+1 b {json.dumps('s3cr/et+1')} c s3cr\\/et+1 d s3cr%2Fet%2B1"
    assert "s3cr" in echoed and "s3cr" not in secret.redact(echoed)
    target = EndpointTarget("x", "http://h:1", "m", secret)
    assert "s3cr" not in repr(target) and "s3cr" not in json.dumps(target.describe())
    assert target.describe()["auth"] == "bearer"


def test_endpoint_tokens_come_from_the_environment_by_name_without_fallback():
    env = {"ACCEL_ENDPOINT_TOKEN": "generic", "ACCEL_ENDPOINT_TOKEN_VLLM_A": "a", "MINE": "m", "EMPTY": ""}
    assert endpoint_token(environ=env) == "generic"
    assert endpoint_token("vllm-a", environ=env) == "a"
    assert endpoint_token("tgi", environ=env) is None  # never another endpoint's token
    assert endpoint_token(env_var="MINE", environ=env) == "m"
    assert endpoint_token(env_var="EMPTY", environ=env) is None
    with pytest.raises(ConfigError, match=r"MISSING.*not set"):
        endpoint_token(env_var="MISSING", environ=env)


# ----------------------------------------------------------------------------- prompts


def test_approximate_prompts_have_one_word_per_token_and_differ_per_request():
    source = PromptSource(32, seed=1)
    first, second = source[0], source[1]
    assert len(first.text.split()) == 32 == first.tokens
    assert first.text != second.text
    assert source[POOL] is first  # the pool wraps around
    assert PromptSource(32, seed=1)[0] == first  # reproducible
    assert PromptSource(32, seed=2)[0] != first
    assert source.counted_by == COUNTED_APPROX


def test_tokenizer_prompts_are_as_long_as_allowed(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # A vocabulary without most of the prompt words: each word splits into several tokens.
    tokenizer.train_from_iterator(["abc def ghi"] * 10, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    source = PromptSource(40, tokenizer=tmp_path)
    prompt = source[0]
    counted = len(tokenizer.encode(prompt.text).ids)
    assert prompt.tokens == counted and 30 <= counted <= 40  # at most the target, and close to it
    assert len(prompt.text.split()) < 40  # words were several tokens each
    assert source.counted_by == COUNTED_TOKENIZER


def test_an_unreadable_tokenizer_is_a_config_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        PromptSource(8, tokenizer=tmp_path)


# ----------------------------------------------------------------------------- load loops


class FakeServer:
    """A ``send`` that sleeps ``service_s`` and records how many requests were in flight at once."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.in_flight = 0
        self.peak = 0
        self.sent_at: list[float] = []

    async def send(self, i: int) -> RequestSample:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.sent_at.append(started)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.service_s)
        self.in_flight -= 1
        return RequestSample(index=i, started=started, e2e_s=loop.time() - started, ttft_s=0.001, output_tokens=2)


def run(coro):
    return asyncio.run(coro)


def test_closed_loop_sends_exactly_the_requests_with_that_many_clients():
    server = FakeServer(0.01)
    level = run(run_level(server.send, concurrency=3, requests=10, first_index=5))
    assert sorted(s.index for s in level.samples) == list(range(5, 15))
    assert server.peak == 3


def test_closed_loop_for_a_duration_stops_sending_then_counts_the_stragglers():
    server = FakeServer(0.05)
    level = run(run_level(server.send, concurrency=2, requests=None, duration_s=0.2))
    assert 4 <= len(level.samples) <= 12
    assert len(level.samples) == len(server.sent_at)  # nothing lost
    assert level.wall_s >= 0.2


def test_open_loop_fixed_rate_spaces_the_sends():
    server = FakeServer(0.001)
    level = run(run_level(server.send, concurrency=4, requests=6, rate=50.0, arrival="fixed"))
    offsets = [t - server.sent_at[0] for t in server.sent_at]
    assert len(level.samples) == 6
    # On a 20 ms schedule: never early (a late send is followed by a shorter gap, as the schedule is absolute).
    assert all(offset >= i * 0.02 - 0.002 for i, offset in enumerate(offsets)), offsets
    assert offsets[-1] < 5 * 0.02 + 0.5 and level.wall_s >= 5 * 0.02


def test_open_loop_caps_requests_in_flight_and_reports_the_slip():
    server = FakeServer(0.1)  # each request far longer than the 10 ms between arrivals
    level = run(run_level(server.send, concurrency=2, requests=6, rate=100.0, arrival="fixed"))
    assert server.peak == 2 and len(level.samples) == 6
    assert level.late_s > 0.1


def test_poisson_gaps_are_seeded_with_mean_one_over_rate():
    from itertools import islice

    from accelerate_core.endpoint.load import _gaps

    first = list(islice(_gaps(4.0, "poisson", 1), 4000))
    assert first == list(islice(_gaps(4.0, "poisson", 1), 4000))
    assert first != list(islice(_gaps(4.0, "poisson", 2), 4000))
    assert sum(first) / len(first) == pytest.approx(0.25, rel=0.1)
    assert len(set(first)) == len(first)  # not equal gaps
    assert set(islice(_gaps(4.0, "fixed", 1), 10)) == {0.25}


# ----------------------------------------------------------------------------- statistics


def sample(i: int, **kw) -> RequestSample:
    return RequestSample(index=i, started=100.0 + i, **kw)


def test_a_level_report_accounts_for_every_request():
    from accelerate_core.endpoint.load import LevelRun

    samples = [
        sample(0, e2e_s=1.0, ttft_s=0.1, itl_s=[0.1, 0.2], output_tokens=3, usage=Usage(10, 3, 13), prompt_tokens=8),
        sample(1, e2e_s=2.0, ttft_s=0.3, itl_s=[0.4], output_tokens=2, usage=Usage(12, 2, 14), prompt_tokens=8),
        sample(2, e2e_s=0.5, error_class="http-500", error="HTTP 500: boom", status=500, prompt_tokens=8),
        sample(3, e2e_s=0.1, error_class="timeout", error="TimeoutError", prompt_tokens=8),
        sample(4, e2e_s=0.1, error_class="http-500", error="HTTP 500: again", status=500, prompt_tokens=8),
    ]
    report = level_report(LevelRun(4, samples, 100.0, 2.5), "closed-loop")
    assert report.sent == 5 and report.ok == 2
    assert report.errors == {"http-500": 2, "timeout": 1}
    assert report.ok + sum(report.errors.values()) == report.sent
    assert report.error_examples["http-500"] == "HTTP 500: boom"
    assert report.latencies["ttft_s"]["p50"] == pytest.approx(0.2)
    assert report.latencies["itl_s"]["n"] == 3  # gaps pooled over requests
    assert report.latencies["tpot_s"]["n"] == 2
    assert report.output_tokens == 5 and report.output_tokens_per_s == pytest.approx(2.0)
    assert report.requests_per_s == pytest.approx(0.8)
    assert report.server_prompt_tokens == 11 and report.prompt_tokens == 8
    assert [s["start_s"] for s in report.samples] == [0.0, 1.0, 2.0, 3.0, 4.0]
    rows = {r["metric"]: r for r in report.measurements(prompt_tokens=8)}
    assert set(rows) == {"ttft", "itl", "tpot", "latency", "tokens_per_s", "requests_per_s"}
    assert rows["latency"]["samples"] == [1.0, 2.0] and rows["latency"]["batch_size"] == 4
    assert rows["latency"]["seq_len"] == 8 and rows["tokens_per_s"]["unit"] == "tokens/s"


def test_a_level_with_only_failures_has_no_latencies():
    from accelerate_core.endpoint.load import LevelRun

    report = level_report(LevelRun(1, [sample(0, e2e_s=0.1, error_class="timeout")], 100.0, 0.1), "closed-loop")
    assert report.ok == 0 and report.latencies["ttft_s"] is None
    assert [r["metric"] for r in report.measurements(8)] == ["tokens_per_s", "requests_per_s"]


def test_tpot_needs_two_tokens():
    assert sample(0, e2e_s=1.0, ttft_s=0.2, output_tokens=5).tpot_s == pytest.approx(0.2)
    assert sample(0, e2e_s=1.0, ttft_s=0.2, output_tokens=1).tpot_s is None


# ----------------------------------------------------------------------------- error classes


def test_exceptions_map_to_classes():
    refused = httpx2.ConnectError("All connection attempts failed")
    refused.__cause__ = OSError("All connection attempts failed")
    refused.__cause__.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert classify(refused) == ERR_REFUSED
    assert classify(httpx2.ConnectError("Name or service not known")) == ERR_CONNECT
    assert classify(TimeoutError()) == ERR_TIMEOUT
    assert classify(httpx2.ReadTimeout("slow")) == ERR_TIMEOUT
    assert classify(httpx2.RemoteProtocolError("peer closed")) == ERR_CONNECTION_LOST
    assert classify(MalformedStreamError("x")) == ERR_MALFORMED
    assert classify(ValueError("ours")) == "client-error"


def test_messages_are_one_short_line():
    assert one_line("a\nb   c") == "a b c"
    assert len(one_line("x" * 1000)) == 200


# ----------------------------------------------------------------------------- SSE reading


def read_stream(body: bytes, content_type: str = "text/event-stream; charset=utf-8"):
    from accelerate_core.endpoint.client import _StreamReader

    response = httpx2.Response(200, headers={"content-type": content_type}, content=body)
    reader = _StreamReader(started=0.0)
    asyncio.run(reader.read(response))
    return reader


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {"content": content} if content is not None else {}
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_events_are_assembled_from_any_line_ending_comments_and_fields_skipped():
    body = (
        (
            f": keep-alive comment\r\nevent: message\r\nid: 1\r\ndata: {chunk('a')}\r\n\r\n"
            f"data:{chunk('b')}\n\n"  # no space after the colon
            f"retry: 10\rdata: {chunk('')}\r\r"  # an empty delta is not a token
            f'data: {chunk(finish="length")[:-1]}\ndata: , "usage": {{"prompt_tokens": 3, "completion_tokens": 2, '
            f'"total_tokens": 5}}}}\n\n'  # one event split over two data lines
            "data: [DONE]"  # no closing blank line: still an event
        ).encode()
    )
    reader = read_stream(body)
    assert len(reader.times) == 2 and reader.finished
    assert reader.usage == Usage(3, 2, 5)


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b'{"choices": []}', "application/json", "not text/event-stream"),
        (b"data: [1, 2]\n\n", "text/event-stream", "not a JSON object"),
        (b'data: {"id": 1}\n\n', "text/event-stream", "no choices list"),
        (b'data: {"choices": [1]}\n\n', "text/event-stream", "choices are malformed"),
        (b'data: {"choices": [], "usage": {"total": 1}}\n\n', "text/event-stream", "usage is malformed"),
    ],
)
def test_streams_that_are_not_chat_streams_are_malformed(body, content_type, says):
    with pytest.raises(MalformedStreamError, match=says):
        read_stream(body, content_type)


def test_a_stream_without_finish_or_done_is_truncated():
    from accelerate_core.endpoint.classify import TruncatedStreamError

    with pytest.raises(TruncatedStreamError):
        read_stream(f"data: {chunk('a')}\n\n".encode())
