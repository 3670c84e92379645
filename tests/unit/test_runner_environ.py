"""The job environment's allow-list, on plain dicts."""

from __future__ import annotations

from accelerate_core.runner.environ import ALLOWED, scrub


def test_only_allowed_names_pass():
    kept = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "1", "LC_ALL": "C.UTF-8", "HF_HOME": "/cache"}
    dropped = {"ACCEL_BROKER_URL": "redis://localhost:6379/0", "REDIS_HOST": "x", "LD_PRELOAD": "/tmp/evil.so"}

    assert scrub({**kept, **dropped}) == kept


def test_secrets_never_pass_even_under_an_allowed_prefix():
    environ = {"LC_SECRET_TOKEN": "x", "LC_PASSWORD": "y", "HF_TOKEN": "hf_x", "ACCEL_FLOWER_PASSWORD": "p",
               "FLOWER_BASIC_AUTH": "u:p", "AWS_SECRET_ACCESS_KEY": "k", "OPENAI_API_KEY": "k"}  # fmt: skip

    assert scrub(environ) == {}


def test_a_password_in_a_url_drops_the_variable():
    assert scrub({"HF_HOME": "https://user:pw@example.org/cache", "TMPDIR": "/tmp"}) == {"TMPDIR": "/tmp"}


def test_the_allow_list_holds_no_secret_looking_name():
    assert scrub(dict.fromkeys(ALLOWED, "v")) == dict.fromkeys(ALLOWED, "v")
