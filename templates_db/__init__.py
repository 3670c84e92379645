"""The template catalogue: jinja2 test templates stored and versioned in DuckDB, rendering, seeding.

Two halves, so that a worker never opens a DuckDB file another process may hold:

- rendering (what workers use; no DuckDB): :mod:`templates_db.render` (``render``, ``render_job``:
  sandboxed, ``StrictUndefined``, validated output), :mod:`templates_db.validate` (compile + tests
  present; ``pytest --collect-only`` in a subprocess), :mod:`templates_db.literals` (the ``pyrepr``
  filter), :mod:`templates_db.context` (render contexts from the catalog), :mod:`templates_db.model`
  (``TemplateVersion`` and the lookup order, pure data);
- the store (CLI and planner only): :mod:`templates_db.store` (``TemplateStore``, the only module that
  imports DuckDB), the shipped ``.j2`` files in ``templates_db/shipped`` with their ``manifest.json``,
  and :mod:`templates_db.generate` (one test file per architecture, for ``accel generate``).

Importing this package imports none of jinja2, DuckDB, torch or transformers.
"""
