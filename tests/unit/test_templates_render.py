"""Rendering and validation of test templates (no DuckDB, no transformers: hand-made contexts)."""

from __future__ import annotations

import ast
import enum
import math
import time

import pytest

from accelerate_core.contracts import TemplateRef
from accelerate_core.errors import TemplateInvalidError
from templates_db.literals import pyrepr
from templates_db.model import sha256_text
from templates_db.render import generated_file_name, render, render_job
from templates_db.store import shipped_templates
from templates_db.validate import validate_source
from tests.unit import template_samples

GOOD = "X = {{ config | pyrepr }}\n\n\ndef test_x():\n    assert X == {{ config | pyrepr }}\n"


def _shipped_ref() -> TemplateRef:
    spec, body = next(s for s in shipped_templates() if s[0]["name"] == "default")
    return TemplateRef(name=spec["name"], sha=sha256_text(body), body=body, version=1)


def _assigned(source: str, name: str) -> object:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not assigned in the generated file")


class _Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        {"a": True, "b": False, "c": None, "d": [1, 2.5, "x'\"\n"], "e": {"1": {"nested": (1,)}}},
        [],
        {},
        "",
        -0.0,
        1e-12,
        list(range(100)),
        {str(i): {"k": [i] * 10} for i in range(30)},
    ],
)
def test_pyrepr_round_trips_json_like_values(value: object) -> None:
    # Given a JSON-like value (true/false/null included), when written as Python, it evaluates back equal.
    text = pyrepr(value)
    assert ast.literal_eval(text) == value
    assert all(len(line) <= 100 for line in text.splitlines())


def test_pyrepr_writes_non_finite_floats_and_enums_as_plain_values() -> None:
    values = eval(pyrepr([float("inf"), -float("inf"), float("nan"), _Color.RED]), {"float": float})
    assert values[:2] == [math.inf, -math.inf] and math.isnan(values[2])
    assert values[3] == "red" and type(values[3]) is str


@pytest.mark.parametrize("bad", [{1, 2}, object(), {("a", "b"): 1}, {(1,): 2}])
def test_pyrepr_refuses_values_without_a_safe_literal(bad: object) -> None:
    with pytest.raises(TypeError, match="pyrepr"):
        pyrepr(bad)


def test_render_embeds_config_as_python_not_json() -> None:
    config = {"flag": True, "off": False, "none": None, "s": "it's"}
    source = render(GOOD, {"config": config})
    assert _assigned(source, "X") == config
    assert "true" not in source and "null" not in source
    # tojson is the same filter in a code template (JSON's true/false/null would not be Python)
    assert render(GOOD.replace("pyrepr", "tojson"), {"config": config}) == source


def test_undefined_variable_is_refused_with_its_template_line() -> None:
    body = "import os\n\n\ndef test_a():\n    assert {{ no_such_name }}\n"
    with pytest.raises(TemplateInvalidError, match=r"line 5: .*no_such_name.* is undefined") as info:
        render(body, {}, name="t1")
    assert "\n" not in str(info.value)


def test_undefined_attribute_inside_a_loop_names_the_template_line() -> None:
    body = "X = 1\n{% for m in models %}\nY = {{ m.nope }}\n{% endfor %}\n\n\ndef test_a():\n    pass\n"
    with pytest.raises(TemplateInvalidError, match=r"'t2' line 3: .*nope"):
        render(body, {"models": [{"a": 1}]}, name="t2")


def test_jinja_syntax_error_is_refused_with_its_template_line() -> None:
    body = "X = 1\n\n{% if x %}\ndef test_a():\n    pass\n"
    with pytest.raises(TemplateInvalidError, match=r"'t3' line \d+: jinja syntax error: Unexpected end of template"):
        render(body, {"x": 1}, name="t3")
    with pytest.raises(TemplateInvalidError, match=r"'t4' line 2: jinja syntax error"):
        render("X = 1\nY = {{ x + }}\n", {"x": 1}, name="t4")


def test_invalid_rendered_python_is_refused_with_the_template_line() -> None:
    body = "import os\n\nVALUE = {{ value }}\n\n\ndef test_a():\n    assert VALUE\n"
    with pytest.raises(TemplateInvalidError, match=r"'t5' line 3: rendered Python is invalid .*rendered line 3") as e:
        render(body, {"value": "1 +"}, name="t5")
    assert "VALUE = 1 +" in str(e.value)


def test_code_that_parses_but_does_not_compile_is_refused() -> None:
    with pytest.raises(TemplateInvalidError, match=r"line 1: rendered Python is invalid .*return"):
        render("return {{ x }}\n\n\ndef test_a():\n    pass\n", {"x": 1})


def test_a_file_without_pytest_tests_is_refused() -> None:
    with pytest.raises(TemplateInvalidError, match="no pytest tests"):
        render("def helper():\n    return {{ x }}\n\n\nclass TestX:\n    def __init__(self):\n        pass\n", {"x": 1})


def test_the_sandbox_refuses_attribute_escapes() -> None:
    with pytest.raises(TemplateInvalidError, match=r"line 1: .*unsafe"):
        render("X = {{ x.__class__.__mro__ }}\n\n\ndef test_a():\n    pass\n", {"x": 1})


def test_validate_source_finds_functions_and_classes() -> None:
    source = (
        "def test_a():\n    pass\n\n\nasync def test_b():\n    pass\n\n\n"
        "class TestC:\n    def test_d(self):\n        pass\n"
    )
    assert validate_source(source) == ["test_a", "test_b", "TestC"]


def test_render_job_refuses_a_body_that_does_not_match_its_sha() -> None:
    ref = _shipped_ref()
    tampered = TemplateRef(name=ref.name, sha=ref.sha, body=ref.body + "\n# edited\n", version=ref.version)
    with pytest.raises(TemplateInvalidError, match="does not match sha"):
        render_job(tampered, template_samples.contexts()[0])


@pytest.mark.parametrize(("hardware", "device"), [("cpu", "cpu"), ("cuda", "cuda"), ("rocm", "cuda"), ("mps", "mps")])
def test_shipped_template_renders_every_sample_for_every_hardware(hardware: str, device: str) -> None:
    ref = _shipped_ref()
    for context in template_samples.contexts(hardware):
        source = render_job(ref, context)
        tests = validate_source(source)
        assert _assigned(source, "CONFIG") == context["config"]
        assert _assigned(source, "DEVICE") == device
        assert _assigned(source, "HARDWARE") == hardware
        assert _assigned(source, "MODEL_CLASS") == context["model_class"]
        expected = ["test_forward", "test_generate", "test_benchmark"] if context["generative"] else None
        assert tests == (expected or ["test_forward", "test_benchmark"])
        assert ("min_new_tokens=NEW_TOKENS" in source) == ("max_new_tokens=NEW_TOKENS" in source) == bool(expected)
        assert ref.sha[:12] in source


def test_module_level_of_a_generated_file_only_imports_and_assigns() -> None:
    source = render_job(_shipped_ref(), template_samples.contexts()[1])
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Import | ast.ImportFrom | ast.Assign | ast.FunctionDef | ast.Expr), (
            f"module-level {type(node).__name__} at line {node.lineno} would run at collection"
        )


def test_rendering_and_validating_is_fast() -> None:
    ref, contexts = _shipped_ref(), template_samples.contexts()
    render_job(ref, contexts[0])  # compile the template once
    start = time.process_time()  # CPU time: other processes on a shared 2-core machine do not count
    for _ in range(50):
        for context in contexts:
            render_job(ref, context)
    per_file_ms = (time.process_time() - start) / 200 * 1000
    assert per_file_ms < 2.5, f"{per_file_ms:.1f} ms per file (budget: all ~800 architectures in 2 s)"


def test_generated_file_names_are_importable_module_names() -> None:
    assert generated_file_name("bert") == "test_bert.py"
    assert generated_file_name("xlm-roberta") == "test_xlm_roberta.py"
    assert generated_file_name("gpt-sw3").removesuffix(".py").isidentifier()
