"""Load a model from a local checkpoint or a model type, and place it on the best device.

``load_checkpoint_and_dispatch(source, hardware="auto", dtype=None)``:

1. **resolve** the source with :func:`accelerate_core.sources.resolve_source`: a local checkpoint directory
   (``config.json`` + weights; a hub id's snapshot folder in the local cache), loaded with
   ``local_files_only=True`` (the hub is never contacted), or a transformers model type built by
   :func:`accelerate_core.catalog.build` from a tiny config with random weights. A checkpoint is data
   from elsewhere, so loading it never runs its code: safetensors files are preferred (and then only
   they are read), ``.bin``/``.pt`` files are unpickled with ``weights_only=True`` (a pickle that would
   call anything but tensor constructors is refused), no remote code is trusted, and
   ``architectures[0]`` in ``config.json`` must name a model class of transformers;
2. **select** the device with :func:`~accelerate_core.backends.select_hardware` (memory fit, dtype
   support, preference);
3. **load** and place the model there, in eval mode, and return where it went.

Importing this module is light; torch and transformers are imported on the first call, under a
lock, because several threads calling at once must not race through transformers' lazy modules.
Building/loading itself is serialized too: transformers changes process-wide torch state meanwhile.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from accelerate_core.backends import Inventory, ModelRequirements, Selection, detect, normalize_dtype, select_hardware
from accelerate_core.constants import SIZE_FULL, SIZE_TINY, SOURCE_TYPE
from accelerate_core.errors import AccelerateError, ModelBuildError, UnknownModelError
from accelerate_core.sources import fetch_command, resolve_source

logger = logging.getLogger(__name__)

SOURCE_CHECKPOINT = "checkpoint"
SOURCE_MODEL_TYPE = "model-type"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_import_lock = threading.Lock()
# transformers builds and loads models under process-wide torch state (the default dtype, a meta-device
# context): two threads loading at once corrupt each other ("Cannot copy out of meta tensor"), so
# building and placing a model is serialized. Using the models afterwards is not.
_build_lock = threading.RLock()
_heavy: tuple[Any, Any] | None = None


@dataclass(frozen=True, slots=True)
class Dispatched:
    """A loaded model and where it went.

    Attributes:
        model: the ``torch.nn.Module``, in eval mode, on ``device``.
        device: the torch device string (``cpu``, ``cuda:0``, ``mps``; ROCm GPUs are ``cuda:N``).
        hardware: the hardware kind (``cpu``, ``cuda``, ``rocm``, ``mps``).
        dtype: the parameters' dtype name (``float32``, ``bfloat16``, ...).
        source_kind: ``checkpoint`` or ``model-type``.
        selection: the device choice with every candidate assessed.
        inputs: forward inputs on ``device`` when the catalog built the model (else None).
    """

    model: Any
    device: str
    hardware: str
    dtype: str
    source_kind: str
    selection: Selection
    inputs: dict[str, Any] | None = None


def _torch_and_transformers() -> tuple[Any, Any]:
    """Import torch and transformers once per process, one thread at a time."""
    global _heavy
    with _import_lock:
        if _heavy is None:
            import torch
            import transformers

            _heavy = (torch, transformers)
        return _heavy


def _resolve(source: str | os.PathLike[str]) -> tuple[str, str]:
    """``("checkpoint", directory)`` or ``("model-type", name)``: ``source`` resolved by
    :func:`accelerate_core.sources.resolve_source` (the one parser of model names) against transformers' model
    types; a hub id is its snapshot folder in the local cache.

    Raises:
        UnknownModelError: empty, a path that is not a checkpoint directory, a hub id not in the local cache, or
            a name that is none of these nor a transformers model type.
    """
    text = os.fspath(source)
    if not text.strip():
        raise UnknownModelError("empty model source: give a checkpoint directory or a model type such as 'bert'")
    _, transformers = _torch_and_transformers()
    found = resolve_source(text, transformers.CONFIG_MAPPING.keys())
    if found.kind == SOURCE_TYPE:
        return SOURCE_MODEL_TYPE, found.ref
    if found.path is None:
        fetch = fetch_command(found.ref)
        raise UnknownModelError(f"{found.ref!r} is not in the local Hugging Face cache: fetch it with `{fetch}`")
    return SOURCE_CHECKPOINT, found.path


def _checkpoint_mb(directory: Path) -> float:
    """The weight files' size in MiB: the estimate of the loaded weights' memory."""
    total = sum(p.stat().st_size for p in directory.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    return total / 2**20


def _requirements(kind: str, where: str, dtype: str) -> ModelRequirements:
    if kind == SOURCE_CHECKPOINT:
        weights_mb = _checkpoint_mb(Path(where))
        return ModelRequirements(model_type=Path(where).name, dtype=dtype, memory_mb=weights_mb * 1.5 or None)
    return ModelRequirements(model_type=where, dtype=dtype)  # tiny config: a few MiB, fits anywhere


def load_checkpoint_and_dispatch(
    source: str | os.PathLike[str],
    hardware: str = "auto",
    dtype: str | None = None,
    *,
    inventory: Inventory | None = None,
) -> Dispatched:
    """Load ``source`` and place it on the chosen device in eval mode.

    Args:
        source: a local checkpoint directory or a transformers model type (``bert``).
        hardware: ``auto``, a kind (``cuda``) or one device (``cuda:1``).
        dtype: ``float32`` (default), ``float16``/``fp16``, ``bfloat16``/``bf16``, ``float64``.
        inventory: the devices to choose from (default: this machine's :func:`detect`).

    Raises:
        UnknownModelError: ``source`` is neither a checkpoint directory nor a model type.
        HardwareUnavailableError: the requested hardware is absent or cannot run the model.
        ModelBuildError: the model exists but could not be loaded or built.
    """
    dtype_name = normalize_dtype(dtype)
    kind, where = _resolve(source)
    selection = select_hardware(_requirements(kind, where, dtype_name), inventory or detect(), hardware=hardware)
    torch, _ = _torch_and_transformers()
    torch_dtype = getattr(torch, dtype_name)
    inputs = None
    with _build_lock:
        if kind == SOURCE_CHECKPOINT:
            model = _load_checkpoint(Path(where), torch_dtype)
        else:
            model, inputs = _build_model_type(where, selection.torch_device, torch_dtype)
        try:
            model = model.to(device=selection.torch_device, dtype=torch_dtype).eval()
        except (RuntimeError, ValueError) as e:
            raise ModelBuildError(f"cannot place {where} on {selection.torch_device} ({e}): try hardware='cpu'") from e
    logger.info("dispatched %s (%s) to %s as %s", where, kind, selection.torch_device, dtype_name)
    return Dispatched(model, selection.torch_device, selection.kind, dtype_name, kind, selection, inputs)


def build_model(
    model_type: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    size: str = SIZE_TINY,
    checkpoint: str | None = None,
    config: dict[str, Any] | None = None,
    model_class: str | None = None,
    attn: str | None = None,
) -> Any:
    """The model a job runs, in eval mode on ``device`` as ``dtype`` (what a generated test builds).

    Args:
        model_type: the architecture.
        device: a torch device string.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        size: ``tiny`` (``config``, the catalog's shrunk one by default) or ``full`` (the default config).
        checkpoint: a local checkpoint directory (a hub id's snapshot folder too): its weights, not random ones.
        config: the tiny config dict (default: the catalog's).
        model_class: the tiny model's class (default: the catalog's choice).
        attn: the attention implementation to switch to (None: the model's default).

    Raises:
        ModelBuildError: the model cannot be built, its checkpoint is refused (see the module docstring), or it
            cannot run ``attn``.
    """
    if checkpoint is not None:
        torch, _ = _torch_and_transformers()
        with _build_lock:
            model = _load_checkpoint(Path(checkpoint), getattr(torch, dtype)).to(device).eval()
    elif size == SIZE_FULL:
        from accelerate_core.full_size import build_full

        model = build_full(model_type, device=device, dtype=dtype)
    else:
        from accelerate_core.catalog import instantiate

        model = instantiate(model_type, config, model_class, device=device, dtype=dtype)
    return set_attention(model, attn)


ATTN_UNSUPPORTED = "attention {attn!r} is not supported by"
"""The start of the message of a model that cannot run an attention implementation (a ``skipped`` row)."""


_FLASH_PACKAGES: Final = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}
"""The package each flash attention needs installed (without it transformers would download a hub kernel)."""


def set_attention(model: Any, attn: str | None) -> Any:
    """``model`` switched to the attention implementation ``attn`` (None: unchanged).

    Raises:
        ModelBuildError: the model (or this install) cannot run ``attn``, or cannot switch to it.
    """
    if attn is None:
        return model
    unsupported = f"{ATTN_UNSUPPORTED.format(attn=attn)} {type(model).__name__}"
    package = _FLASH_PACKAGES.get(attn)
    if package is not None and importlib.util.find_spec(package) is None:  # else transformers fetches hub kernels
        raise ModelBuildError(f"{unsupported}: the {package} package is not installed here")
    try:
        model.set_attn_implementation(attn)
    except (ValueError, ImportError, NotImplementedError) as e:
        raise ModelBuildError(f"{unsupported}: {_first_line(e)}") from e
    found = getattr(model.config, "_attn_implementation", None)
    if found != attn:
        raise ModelBuildError(f"{unsupported}: it cannot switch (still {found})")
    return model


def _load_checkpoint(directory: Path, torch_dtype: Any) -> Any:
    _, transformers = _torch_and_transformers()
    safetensors = any(directory.glob("*.safetensors"))
    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        model_cls = _model_class(transformers, getattr(config, "architectures", None) or [], directory)
        return model_cls.from_pretrained(
            directory, config=config, local_files_only=True, dtype=torch_dtype, trust_remote_code=False,
            use_safetensors=safetensors, weights_only=True,
        )  # fmt: skip
    except pickle.UnpicklingError as e:
        raise ModelBuildError(
            f"refused checkpoint {directory}: its weights file holds more than tensors (a pickle that would run "
            f"code: {_first_line(e)}); convert it to safetensors from a source you trust"
        ) from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelBuildError(f"cannot load checkpoint {directory} ({e}): check its config.json and weights") from e


def _model_class(transformers: Any, architectures: list[Any], directory: Path) -> Any:
    """The class ``architectures[0]`` names: a ``PreTrainedModel`` subclass of transformers (``AutoModel``
    when none is named); never an arbitrary attribute, import path or remote code."""
    if not architectures:
        return transformers.AutoModel
    name = architectures[0]
    found = getattr(transformers, name, None) if isinstance(name, str) and _CLASS_NAME.fullmatch(name) else None
    if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
        return found
    raise ModelBuildError(
        f"refused checkpoint {directory}: config.json names architecture {str(name)[:80]!r}, which is not a model "
        f"class of transformers {transformers.__version__}: fix its 'architectures'"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _build_model_type(model_type: str, device: str, torch_dtype: Any) -> tuple[Any, dict[str, Any] | None]:
    """Build ``model_type`` tiny with random weights through the catalog; return the model and its inputs."""
    from accelerate_core.catalog import build

    try:
        built = build(model_type, device=device, dtype=torch_dtype)
    except AccelerateError:
        raise
    except Exception as e:  # a model's own code may raise anything while it is built
        raise ModelBuildError(
            f"cannot build tiny {model_type} ({type(e).__name__}: {e}): see `accel models show {model_type}`"
        ) from e
    return built.model, built.inputs
