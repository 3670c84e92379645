"""Rendering templates into validated pytest files: the half of ``templates_db`` that workers use.

No DuckDB here (a worker never opens the templates DB; the template travels in its job payload). The
environment is sandboxed, undefined names are errors (``StrictUndefined``), autoescape is off (this is
code, not HTML) and trailing newlines are kept. Values are embedded with the ``pyrepr`` filter (also
installed as ``tojson``, which in a code template must give Python, not JSON). Every rendered file is
validated with :func:`templates_db.validate.validate_source` before it is returned.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from accelerate_core.errors import TemplateInvalidError
from templates_db.literals import pyrepr
from templates_db.model import sha256_text
from templates_db.validate import SourceProblem, validate_source

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

    from accelerate_core.contracts import TemplateRef

log = logging.getLogger(__name__)

_TEMPLATE_FILENAME = "<template>"
_JINJA_TAG = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}")

__all__ = ["environment", "generated_file_name", "render", "render_job"]


@functools.cache
def environment() -> SandboxedEnvironment:
    """The one jinja2 environment for code templates (sandboxed, strict, no autoescape)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pyrepr"] = pyrepr
    env.filters["tojson"] = pyrepr
    return env


@functools.lru_cache(maxsize=32)
def _compile(body: str, name: str) -> Template:
    from jinja2 import TemplateSyntaxError

    try:
        return environment().from_string(body)
    except TemplateSyntaxError as e:
        raise TemplateInvalidError(_message(name, e.lineno, f"jinja syntax error: {e.message}")) from e


def render(body: str, context: Mapping[str, Any], *, name: str = "template") -> str:
    """Render ``body`` with ``context`` and return the validated Python source.

    Args:
        body: the jinja2 template text.
        context: the render context (``templates_db.context``), JSON-like values.
        name: the template's name, used in error messages.

    Raises:
        TemplateInvalidError: a jinja syntax error, an undefined variable, a sandbox violation, a
            filter failure, or rendered code that does not parse/compile or has no pytest tests; the
            one-line message names the template line.
    """
    template = _compile(body, name)
    try:
        source = template.render(**context)
    except Exception as e:  # jinja2 raises many classes (UndefinedError, SecurityError, filter errors)
        line = _template_line_from_traceback(e)
        reason = f"{type(e).__name__}: {e}" if not _is_jinja_error(e) else str(e)
        raise TemplateInvalidError(_message(name, line, reason)) from e
    try:
        validate_source(source, filename=f"<{name}>")
    except SourceProblem as e:
        line = _template_line_for_output(body, source, e.lineno)
        where = f"rendered line {e.lineno}" if e.lineno else "rendered file"
        raise TemplateInvalidError(_message(name, line, f"{e.reason} ({where})")) from e
    return source


def render_job(template: TemplateRef, context: Mapping[str, Any]) -> str:
    """Render a template carried in a job payload, with its name/sha/version added to the context.

    Raises:
        TemplateInvalidError: the body does not match its sha, or rendering/validation fails.
    """
    if sha256_text(template.body) != template.sha:
        raise TemplateInvalidError(
            f"template {template.name!r} v{template.version}: body does not match sha {template.sha[:12]}: "
            "re-plan the run so the job carries an intact template"
        )
    full = dict(context)
    full["template"] = {"name": template.name, "sha": template.sha, "version": template.version}
    return render(template.body, full, name=template.name)


def _message(name: str, line: int | None, reason: str) -> str:
    reason = " ".join(reason.split())
    where = f" line {line}" if line else ""
    return f"template {name!r}{where}: {reason}"


def _is_jinja_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("jinja2")


def _template_line_from_traceback(e: BaseException) -> int | None:
    """jinja2 rewrites tracebacks so template frames carry the template's own line numbers."""
    line = None
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _template_line_for_output(body: str, source: str, out_line: int | None) -> int | None:
    """Best guess of the template line that produced rendered line ``out_line``.

    An exact match of the (stripped) text wins; else the template line whose literal pieces (the text
    between its jinja tags) all occur in the rendered line, preferring the most literal text.
    """
    if not out_line:
        return None
    rendered = source.splitlines()
    if not 0 < out_line <= len(rendered):
        return None
    target = rendered[out_line - 1].strip()
    best: tuple[int, int] | None = None
    for number, text in enumerate(body.splitlines(), start=1):
        stripped = text.strip()
        if stripped == target and target:
            return number
        pieces = [p.strip() for p in _JINJA_TAG.split(stripped) if p.strip()]
        if pieces and stripped != "".join(pieces) and all(p in target for p in pieces):
            score = sum(len(p) for p in pieces)
            if best is None or score > best[0]:
                best = (score, number)
    return best[1] if best else None


def generated_file_name(model_type: str) -> str:
    """The file name of a model type's generated test: ``test_<type>.py`` with non-word characters as ``_``."""
    return "test_" + re.sub(r"\W", "_", model_type) + ".py"
