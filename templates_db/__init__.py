"""The template catalogue: jinja2 test templates stored and versioned in DuckDB, rendering, seeding."""
