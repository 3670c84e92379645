"""Real checkpoints for model-source tests: tiny models written by ``save_pretrained`` (safetensors), into a
plain directory or into a Hugging Face cache laid out as huggingface_hub lays it out
(``models--org--name/snapshots/<sha>/`` and ``refs/main``)."""

from __future__ import annotations

from pathlib import Path

SHA = "0123456789abcdef0123456789abcdef01234567"
"""The commit of every snapshot these helpers put in a cache."""


def save_tiny(model_type: str, folder: Path) -> Path:
    """The catalog's tiny ``model_type`` saved into ``folder`` (returned)."""
    from accelerate_core import catalog

    catalog.instantiate(model_type).save_pretrained(folder, safe_serialization=True)
    return folder


def cache_tiny(cache: Path, repo_id: str, model_type: str) -> Path:
    """A tiny ``model_type`` cached as hub id ``repo_id`` at :data:`SHA` under ``cache``; its snapshot folder."""
    from huggingface_hub.file_download import repo_folder_name

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = save_tiny(model_type, repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    return snapshot
