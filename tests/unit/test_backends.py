"""Backends: detection on this machine, probes on given driver output, pinning env, peak memory, caching."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from accelerate_core.backends import (
    THREAD_ENV_VARS,
    DeviceInfo,
    HardwareUnavailableError,
    StubBackend,
    detect,
    get_backend,
)
from accelerate_core.backends.cpu import cpu_model_name
from accelerate_core.backends.cuda import parse_nvidia_smi_csv, probe_nvidia_smi
from accelerate_core.backends.rocm import gfx_arch, parse_properties, probe_kfd, rocm_smi_names
from accelerate_core.errors import ConfigError

SMI_CSV = """0, NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0, GPU-aaaa
1, Tesla T4, 15360, 550.54.15, 7.5, GPU-bbbb
"""


def test_this_machine_has_a_cpu_with_its_facts() -> None:
    # Given this machine; When it is detected; Then its CPU is there with model, cores, threads, memory
    inventory = detect()
    cpu = inventory.of("cpu")
    assert len(cpu) == 1 and cpu[0].label == "cpu:0"
    assert cpu[0].name and cpu[0].threads and cpu[0].threads >= 1
    assert cpu[0].cores is None or cpu[0].cores >= 1
    assert cpu[0].total_memory_mb and cpu[0].total_memory_mb > 256
    assert inventory.kinds()[0] == "cpu"
    assert json.loads(json.dumps(inventory.to_dict()))["devices"][0]["kind"] == "cpu"


def test_detection_is_cached_and_thread_safe() -> None:
    first = detect()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(detect())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(r is first for r in results)
    assert detect(refresh=True) == first  # a fresh probe finds the same hardware


def test_a_missing_kind_is_explained_not_raised() -> None:
    inventory = detect()
    for kind in ("cuda", "rocm", "mps"):
        if not inventory.has(kind):
            assert any(n.startswith(f"{kind}:") for n in inventory.notes), inventory.notes


def test_a_missing_device_index_raises_one_line() -> None:
    with pytest.raises(HardwareUnavailableError, match=r"cpu device 7 is not available \(present: \[0\]\)"):
        get_backend("cpu").device(7)
    with pytest.raises(ConfigError, match="unknown hardware kind 'tpu'"):
        get_backend("tpu")


def test_cpu_model_name_from_proc_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    assert cpu_model_name(text) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model_name("processor : 0\nModel : Raspberry Pi 4 Model B Rev 1.4\n").startswith("Raspberry Pi 4")


def test_nvidia_smi_csv_is_parsed() -> None:
    devices = parse_nvidia_smi_csv(SMI_CSV)
    assert [d.label for d in devices] == ["cuda:0", "cuda:1"]
    assert devices[0].total_memory_mb == 81559 and devices[0].compute_capability == "9.0"
    assert devices[1].capability_tuple() == (7, 5) and devices[1].uuid == "GPU-bbbb"
    assert parse_nvidia_smi_csv("0, X, [N/A], [N/A], 8.6, GPU-c\n")[0].total_memory_mb is None


def _fake_tool(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_nvidia_smi_without_compute_cap_falls_back(tmp_path: Path) -> None:
    # Given an old driver's nvidia-smi that rejects the compute_cap field (a stand-in script)
    exe = _fake_tool(
        tmp_path,
        "nvidia-smi",
        "import sys\nif 'compute_cap' in sys.argv[1]:\n    sys.exit(2)\nprint('0, Tesla V100, 16160, 470.1, GPU-v')\n",
    )
    # When it is probed; Then the device is found, with no capability and the uuid in its place
    devices = probe_nvidia_smi(exe)
    assert devices == [
        DeviceInfo(kind="cuda", index=0, name="Tesla V100", total_memory_mb=16160, driver_version="470.1", uuid="GPU-v")
    ]
    assert probe_nvidia_smi(str(tmp_path / "absent")) is None


@pytest.mark.parametrize(
    ("version", "arch"), [(90010, "gfx90a"), (90402, "gfx942"), (110000, "gfx1100"), (90008, "gfx908")]
)
def test_gfx_arch_names(version: int, arch: str) -> None:
    assert gfx_arch(version) == arch


def _kfd_node(root: Path, n: int, props: dict[str, int], name: str = "", vram: int = 0) -> None:
    node = root / str(n)
    (node / "mem_banks" / "0").mkdir(parents=True)
    (node / "properties").write_text("".join(f"{k} {v}\n" for k, v in props.items()))
    (node / "name").write_text(name + "\n")
    (node / "mem_banks" / "0" / "properties").write_text(f"heap_type 1\nsize_in_bytes {vram}\n")


def test_kfd_topology_lists_gpus_not_cpus(tmp_path: Path) -> None:
    # Given a KFD topology with a CPU agent and two GPU agents (as sysfs lays it out)
    _kfd_node(tmp_path, 0, {"cpu_cores_count": 64, "simd_count": 0})
    _kfd_node(tmp_path, 1, {"simd_count": 440, "gfx_target_version": 90010, "unique_id": 42}, "gfx90a", 64 * 2**30)
    _kfd_node(tmp_path, 2, {"simd_count": 304, "gfx_target_version": 90402}, "", 192 * 2**30)
    # When probed; Then the GPUs are rocm:0 and rocm:1 with arch and memory, never cuda
    devices = probe_kfd(tmp_path)
    assert devices is not None
    assert [(d.label, d.arch, d.total_memory_mb) for d in devices] == [
        ("rocm:0", "gfx90a", 65536),
        ("rocm:1", "gfx942", 196608),
    ]
    assert devices[0].name == "AMD gfx90a" and devices[0].uuid == "42"
    assert probe_kfd(tmp_path / "absent") is None
    assert parse_properties("simd_count 4\nbad line\n") == {"simd_count": 4}


def test_pin_env_per_kind() -> None:
    cuda = get_backend("cuda").pin_env(1, threads=4)
    assert cuda["CUDA_VISIBLE_DEVICES"] == "1" and cuda["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert all(cuda[v] == "4" for v in THREAD_ENV_VARS)
    rocm = get_backend("rocm").pin_env(2)
    assert rocm == {"HIP_VISIBLE_DEVICES": "2"}  # only one filter: two would filter twice
    cpu = get_backend("cpu").pin_env(0, threads=2)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["HIP_VISIBLE_DEVICES"] == "" and cpu["OMP_NUM_THREADS"] == "2"
    assert get_backend("mps").pin_env(0, threads=0)["OMP_NUM_THREADS"] == "1"


def test_cpu_peak_memory_grows_with_an_allocation() -> None:
    backend = get_backend("cpu")
    backend.synchronize()  # a no-op on cpu, but callable
    backend.reset_peak_memory()
    before = backend.peak_memory_mb()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    after = backend.peak_memory_mb()
    del block
    assert after - before >= 48, (before, after)


def test_stub_backend_serves_given_devices() -> None:
    gpu = DeviceInfo(kind="cuda", index=0, name="given", total_memory_mb=1)
    stub = StubBackend("cuda", [gpu])
    assert stub.available() and stub.device(0) is gpu and stub.kind == "cuda"
    assert not StubBackend("rocm").available()


def test_detection_never_imports_torch() -> None:
    code = "import sys, accelerate_core.backends as b; b.detect(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if sys.platform != "darwin":  # macOS probes MPS through torch
        assert done.stdout.strip() == "False"


def test_cuda_backend_finds_gpus_through_nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no NVML library here but an nvidia-smi on PATH (a stand-in printing a driver's answer)
    from accelerate_core.backends import CudaBackend
    from accelerate_core.backends.cuda import probe_nvml

    if probe_nvml() is not None:
        pytest.skip("this machine has a real NVML")
    _fake_tool(tmp_path, "nvidia-smi", f"print({SMI_CSV!r})\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # When a fresh CUDA backend probes; Then it lists both GPUs, as cuda (never rocm)
    devices = CudaBackend().devices()
    assert [(d.label, d.name, d.compute_capability) for d in devices] == [
        ("cuda:0", "NVIDIA H100 80GB HBM3", "9.0"),
        ("cuda:1", "Tesla T4", "7.5"),
    ]


def test_rocm_smi_product_names_in_card_order(tmp_path: Path) -> None:
    # Given rocm-smi's JSON (old and new key spellings, cards out of order; a stand-in script)
    answer = {
        "card1": {"Card Series": "AMD Instinct MI300X", "GFX Version": "gfx942"},
        "card0": {"Card series": "Instinct MI210", "Card SKU": "D67301"},
        "system": {"Driver version": "6.7.0"},
    }
    exe = _fake_tool(tmp_path, "rocm-smi", f"import json\nprint(json.dumps({answer!r}))\n")
    # Then the names come back in card order
    assert rocm_smi_names(exe) == ["Instinct MI210", "AMD Instinct MI300X"]
    assert rocm_smi_names(str(tmp_path / "absent")) == []
