"""select_hardware: pure rules over inventories given as data (no hardware needed)."""

from __future__ import annotations

import pytest

from accelerate_core.backends import (
    DeviceInfo,
    Inventory,
    ModelRequirements,
    dtype_support,
    normalize_dtype,
    parse_hardware,
    require,
    select_hardware,
)
from accelerate_core.errors import ConfigError, HardwareUnavailableError

CPU = DeviceInfo(kind="cpu", index=0, name="Xeon", total_memory_mb=64_000, cores=16, threads=32)
T4 = DeviceInfo(kind="cuda", index=0, name="Tesla T4", total_memory_mb=15_360, compute_capability="7.5")
A100 = DeviceInfo(kind="cuda", index=1, name="A100", total_memory_mb=81_920, compute_capability="8.0")
MI250 = DeviceInfo(kind="rocm", index=0, name="MI250", total_memory_mb=65_536, arch="gfx90a")
MI50 = DeviceInfo(kind="rocm", index=1, name="MI50", total_memory_mb=16_384, arch="gfx906")
M2 = DeviceInfo(kind="mps", index=0, name="Apple M2", total_memory_mb=16_384, runtime_version="13.6")


def inv(*devices: DeviceInfo) -> Inventory:
    return Inventory.of_devices(devices, host="box")


def test_a_gpu_is_preferred_over_mps_and_cpu() -> None:
    selection = select_hardware(ModelRequirements("bert", param_count=110_000_000), inv(CPU, M2, T4))
    assert selection.device == T4
    assert selection.torch_device == "cuda:0"
    assert selection.runnable_kinds == ("cuda", "mps", "cpu")


def test_mps_is_preferred_over_cpu() -> None:
    assert select_hardware(ModelRequirements(), inv(CPU, M2)).kind == "mps"


def test_bf16_needs_compute_capability_8_on_cuda() -> None:
    # Given a T4 (7.5) and an A100 (8.0); When bf16 is asked for; Then only the A100 qualifies
    selection = select_hardware(ModelRequirements("llama", dtype="bf16"), inv(CPU, T4, A100))
    assert selection.device == A100
    t4 = next(c for c in selection.candidates if c.device == T4)
    assert not t4.ok and "compute capability >= 8.0 (has 7.5)" in t4.reasons[0]


def test_bf16_on_a_t4_only_machine_falls_back_to_cpu_which_is_slow() -> None:
    selection = select_hardware(ModelRequirements(dtype="bfloat16"), inv(CPU, T4))
    assert selection.kind == "cpu"
    assert selection.candidates[0].slow


def test_fp16_on_cpu_is_allowed_but_not_preferred() -> None:
    ok, slow, why = dtype_support("fp16", CPU)
    assert ok and slow and why and "not preferred" in why
    # A lower-preference but fast device wins over a slow CPU
    assert select_hardware(ModelRequirements(dtype="fp16"), inv(CPU, M2)).kind == "mps"
    assert select_hardware(ModelRequirements(dtype="fp16"), inv(CPU)).kind == "cpu"


def test_requesting_cuda_with_bf16_on_a_t4_is_a_clear_error() -> None:
    with pytest.raises(HardwareUnavailableError, match=r"no device here can run llama in bfloat16.*cuda:0"):
        select_hardware(ModelRequirements("llama", dtype="bf16"), inv(CPU, T4), hardware="cuda")


def test_memory_must_fit_with_headroom() -> None:
    # 7B parameters in fp16 x 1.5 overhead ~ 20 GiB: too big for a 16 GiB T4, fits an A100
    big = ModelRequirements("llama-7b", param_count=7_000_000_000, dtype="float16")
    assert select_hardware(big, inv(CPU, T4, A100)).device == A100
    selection = select_hardware(big, inv(CPU, T4))
    assert selection.kind == "cpu"
    t4 = next(c for c in selection.candidates if c.device == T4)
    assert any("usable" in r for r in t4.reasons)


def test_headroom_is_applied() -> None:
    device = DeviceInfo(kind="cuda", index=0, name="g", total_memory_mb=1000, compute_capability="9.0")
    assert select_hardware(ModelRequirements(memory_mb=899), inv(device)).device == device
    with pytest.raises(HardwareUnavailableError, match="only 900 MiB usable"):
        select_hardware(ModelRequirements(memory_mb=901), inv(device))


def test_among_gpus_of_one_kind_the_largest_wins() -> None:
    assert select_hardware(ModelRequirements(), inv(T4, A100)).device == A100


def test_a_specific_device_can_be_requested() -> None:
    assert select_hardware(ModelRequirements(), inv(T4, A100), hardware="cuda:0").device == T4
    with pytest.raises(HardwareUnavailableError, match=r"cuda device\(s\) \[3\] not present \(have \[0, 1\]\)"):
        select_hardware(ModelRequirements(), inv(T4, A100), hardware="cuda:3")


def test_rocm_bf16_depends_on_the_gfx_arch() -> None:
    selection = select_hardware(ModelRequirements(dtype="bf16"), inv(MI50, MI250))
    assert selection.device == MI250
    assert selection.torch_device == "cuda:0"  # HIP builds of torch call ROCm GPUs "cuda"
    assert not dtype_support("bf16", MI50)[0]


def test_mps_rules() -> None:
    assert not dtype_support("float64", M2)[0]
    assert not dtype_support("bf16", M2)[0]  # macOS 13.6
    sonoma = DeviceInfo(kind="mps", index=0, name="M3", total_memory_mb=16_384, runtime_version="14.2")
    assert dtype_support("bf16", sonoma)[0]


def test_a_kind_the_model_excludes_is_not_chosen() -> None:
    selection = select_hardware(ModelRequirements(kinds=("cpu",)), inv(CPU, A100))
    assert selection.kind == "cpu"
    assert selection.runnable_kinds == ("cpu",)


def test_unknown_memory_is_not_checked() -> None:
    device = DeviceInfo(kind="cuda", index=0, name="g", total_memory_mb=None, compute_capability="8.6")
    assert select_hardware(ModelRequirements(param_count=10**12), inv(device)).device == device


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "float32"), ("bf16", "bfloat16"), ("torch.float16", "float16"), ("half", "float16"), ("FP32", "float32")],
)
def test_dtype_names_are_normalised(given: str | None, expected: str) -> None:
    assert normalize_dtype(given) == expected


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="int4"):
        normalize_dtype("int4")
    with pytest.raises(ConfigError, match="tpu"):
        parse_hardware("tpu")
    with pytest.raises(ConfigError):
        parse_hardware("cuda:x")
    with pytest.raises(ConfigError, match="unknown hardware kind"):
        ModelRequirements(kinds=("gpu",))
    assert parse_hardware("auto") == (None, None)
    assert parse_hardware("rocm:2") == ("rocm", 2)


def test_require_gives_one_clear_line() -> None:
    with pytest.raises(HardwareUnavailableError) as e:
        require("cuda", inventory=inv(CPU))
    assert str(e.value) == "no cuda device on box (found: cpu): choose another --hardware or run `accel detect`"
    assert e.value.exit_code == 2
    assert require("cuda", [1], inventory=inv(T4, A100)) == [A100]
    assert require("cuda", None, inventory=inv(CPU, T4, A100)) == [T4, A100]
    with pytest.raises(ConfigError):
        require("gpu", inventory=inv(CPU))


def test_selection_and_inventory_round_trip_as_json() -> None:
    inventory = inv(CPU, T4, MI250, M2)
    assert Inventory.from_dict(inventory.to_dict()) == inventory
    assert inventory.to_dict()["kinds"] == ["cpu", "cuda", "rocm", "mps"]
    data = select_hardware(ModelRequirements(), inventory).to_dict()
    assert data["device"] in ("cuda:0", "rocm:0") and len(data["candidates"]) == 4
    with pytest.raises(ConfigError, match="malformed"):
        Inventory.from_dict({"devices": [1, 2]})
