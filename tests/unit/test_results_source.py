"""Where the CLI reads results from: the URL the writer advertises, and the client's one-line errors."""

from __future__ import annotations

import socket

import pytest

from accelerate_core.config import Settings
from accelerate_core.errors import StoreError
from accelerate_core.service.client import ResultsClient
from scheduler.results import page_url, results_api
from workers.service import advertised_url


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "http://127.0.0.1:8765"),
        ({"ACCEL_SERVE_HOST": "0.0.0.0", "ACCEL_SERVE_TOKEN": "t"}, f"http://{socket.gethostname()}:8765"),
        ({"ACCEL_RESULTS_URL": "https://results.example/accel"}, "https://results.example/accel"),
    ],
)
def test_the_writer_advertises_the_url_clients_can_use(environ: dict[str, str], expected: str) -> None:
    # Given where the writer's service is bound; Then it advertises a URL a client can reach, results_url winning
    assert advertised_url(Settings.load(environ=environ), "http://127.0.0.1:8765", 8765) == expected


def test_results_url_sets_the_service_and_the_run_page() -> None:
    settings = Settings.load(environ={"ACCEL_RESULTS_URL": "http://h:1/", "ACCEL_SERVE_TOKEN": "t"})
    api = results_api(settings)
    assert api is not None and api.url == "http://h:1"
    assert page_url(settings, "q4-r1") == "http://h:1/runs/q4-r1"
    assert results_api(Settings.load(environ={})) is None and page_url(Settings.load(environ={}), "r") is None


def test_a_service_that_does_not_answer_is_one_line_naming_it() -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match=rf"cannot reach the results service at http://127.0.0.1:{port} .*writer"):
        ResultsClient(f"http://127.0.0.1:{port}", "secret", timeout_s=5).json("/api/runs")
    assert "secret" not in repr(ResultsClient("http://h:1", "secret"))
