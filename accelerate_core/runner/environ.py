"""The environment a job may see: an explicit allow-list, so secrets never reach job code.

A worker's environment holds the broker URL (with its password), Flower's password, tokens: none of it
is any business of a template's code, and a template that prints ``os.environ`` or a library that
reports it somewhere must find none of it. So a job gets only the variables named here (device
pinning, thread counts, locale, paths, the Hugging Face cache and offline switches), plus the job's own
``env`` from its caller. A name that looks like a secret is dropped even when allowed (``LC_*`` is
the only prefix), and so is a value that carries a password in a URL.

The fork server is started with :func:`scrub` of its client's environment (its children are forked
from it and inherit it), and every child scrubs its own environment again before the job runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

__all__ = ["ALLOWED", "scrub", "scrub_own_environ"]

ALLOWED: Final = frozenset(
    {
        # the process basics
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
        "TMPDIR", "TMP", "TEMP", "LD_LIBRARY_PATH", "VIRTUAL_ENV",
        "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
        "PYTHONFAULTHANDLER", "PYTHONWARNINGS",
        # device pinning (what ``Backend.pin_env`` and the worker's pinning set) and the GPU runtimes
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_HOME", "CUDA_PATH",
        "CUDA_MODULE_LOADING", "CUDA_LAUNCH_BLOCKING", "ROCM_PATH", "HIP_PATH", "HSA_OVERRIDE_GFX_VERSION",
        "ACCEL_WORKER_HARDWARE", "ACCEL_WORKER_DEVICE", "ACCEL_WORKER_NODE",
        # torch
        "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_HIP_ALLOC_CONF", "PYTORCH_NVML_BASED_CUDA_CHECK",
        "PYTORCH_ENABLE_MPS_FALLBACK", "PYTORCH_MPS_HIGH_WATERMARK_RATIO", "TORCH_HOME",
        "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
        # thread counts
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS", "ACCEL_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY",
        "TOKENIZERS_PARALLELISM",
        # the Hugging Face cache and offline switches (never HF_TOKEN)
        "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_TELEMETRY",
        "HF_HUB_DISABLE_PROGRESS_BARS", "XDG_CACHE_HOME",
        # pytest, which runs the generated tests in the child
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    }
)  # fmt: skip
"""Variable names a job may inherit (plus ``LC_*``); everything else is dropped."""

_ALLOWED_PREFIXES: Final = ("LC_",)
_SECRET_NAME: Final = re.compile(
    r"(^|_)(PASSW(OR)?D|PASS|SECRETS?|TOKENS?|CREDENTIALS?|PRIVATE|AUTH|(API_?)?KEYS?)(_|$)", re.IGNORECASE
)
_URL_PASSWORD: Final = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def scrub(environ: Mapping[str, str]) -> dict[str, str]:
    """The allowed part of ``environ`` (see :data:`ALLOWED`), secret-looking names and values removed."""
    return {
        name: value
        for name, value in environ.items()
        if (name in ALLOWED or name.startswith(_ALLOWED_PREFIXES))
        and not _SECRET_NAME.search(name)
        and not _URL_PASSWORD.search(value)
    }


def scrub_own_environ() -> None:
    """Keep only the allowed part of this process's environment (``os.environ`` and the C one under it)."""
    allowed = scrub(os.environ)
    for name in [n for n in os.environ if n not in allowed]:  # a child of a scrubbed server: usually none
        del os.environ[name]
