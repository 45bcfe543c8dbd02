"""The peak GFLOP/s a benchmark's figures are a fraction of: this CPU's, or this GPU's.

CPU: cores x FMA units x fp32 lanes x 2 (an FMA is a multiply and an add) x clock, each input read
from the machine and printed beside the result, so a reader can check or correct it. GPU: the
card's dense bf16 tensor-core figure from its data sheet. A peak that cannot be stated honestly
(AMX tiles, float16 on a CPU, float32 on a GPU) is None, shown as unknown.
"""

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

# fp32 lanes per vector instruction, by the widest vector unit the flags announce.
LANES = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4))
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Dense bf16 tensor-core TFLOP/s (no sparsity), NVIDIA data sheets; first matching name wins.
GPU_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


@dataclass(frozen=True)
class Cpu:
    """What /proc/cpuinfo and lscpu say about the CPU."""

    model: str
    vendor: str
    family: int
    flags: frozenset[str]
    mhz: float | None
    mhz_source: str


@dataclass(frozen=True)
class Peak:
    """A peak in GFLOP/s (None: unknown) and how it was reached, to print beside it."""

    gflops: float | None
    how: str


def read_cpu(cpuinfo: str | None = None, lscpu: str | None = None) -> Cpu:
    """The CPU of this machine (or of the given /proc/cpuinfo and `lscpu` texts, for tests)."""
    cpuinfo = read_text(Path("/proc/cpuinfo")) if cpuinfo is None else cpuinfo
    lscpu = run_lscpu() if lscpu is None else lscpu
    fields = first_fields(cpuinfo)
    max_mhz = first_fields(lscpu).get("CPU max MHz")
    if max_mhz:
        mhz, source = float(max_mhz), "lscpu CPU max MHz"
    elif fields.get("cpu MHz"):
        mhz, source = float(fields["cpu MHz"]), "/proc/cpuinfo cpu MHz"
    else:
        mhz, source = None, "no clock found"
    return Cpu(
        model=fields.get("model name", platform.processor() or platform.machine()),
        vendor=fields.get("vendor_id", ""),
        family=int(fields.get("cpu family", "0") or 0),
        flags=frozenset(fields.get("flags", "").split()),
        mhz=mhz,
        mhz_source=source,
    )


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def run_lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def first_fields(text: str) -> dict[str, str]:
    """`key: value` lines, the first of each key (cpuinfo repeats them per core)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def describe(cpu: Cpu) -> str:
    """The CPU model and the instruction-set flags that decide fp32 and bf16 speed."""
    present = [f for f in CPU_FLAGS if f in cpu.flags] or ["(flags unknown)"]
    return f"{cpu.model}; {torch.get_num_threads()} threads; flags: {' '.join(present)}"


def fma_units(cpu: Cpu) -> tuple[int, str]:
    """How many full-width FMAs a core issues per cycle, and the assumption behind it.

    AMD Zen 4 (family 25 with AVX-512) has two 256-bit FMA pipes and splits a 512-bit FMA over
    both: one 512-bit FMA a cycle. Intel Xeons with AVX-512 are assumed to have two 512-bit FMA
    units (Gold and Platinum; Silver, Bronze and client parts have one). AVX2 parts since Haswell
    and Zen 2 have two 256-bit units."""
    if cpu.vendor == "AuthenticAMD" and cpu.family == 25 and "avx512f" in cpu.flags:
        return 1, "Zen 4: two 256-bit FMA pipes = one 512-bit FMA per cycle"
    if "avx512f" in cpu.flags:
        return 2, "assumed 2 512-bit FMA units (Xeon Gold/Platinum; 1 on Silver/Bronze)"
    return 2, "assumed 2 FMA units (Haswell and later, Zen 2 and later)"


def cpu_fp32_peak(cpu: Cpu, cores: int) -> Peak:
    """cores x FMA units x lanes x 2 x clock, with its inputs."""
    lanes = next((n for flag, n in LANES if flag in cpu.flags), None)
    units, assumption = fma_units(cpu)
    if lanes is None or cpu.mhz is None:
        return Peak(None, f"unknown (lanes {lanes}, clock {cpu.mhz_source})")
    gflops = cores * units * lanes * 2 * cpu.mhz / 1000
    how = (
        f"{cores} cores x {units} FMA units x {lanes} fp32 lanes x 2 x {cpu.mhz / 1000:.2f} GHz "
        f"({cpu.mhz_source}; {assumption})"
    )
    return Peak(gflops, how)


def cpu_peak(cpu: Cpu, cores: int, precision: str) -> Peak:
    """The CPU peak for a run's precision: float32's, or for bf16 the AVX512-BF16 dot product's
    (two bf16 products per fp32 lane: twice float32). AMX and float16 are not modelled."""
    fp32 = cpu_fp32_peak(cpu, cores)
    if precision.startswith("32") or fp32.gflops is None:
        return fp32
    if precision.startswith("bf16") and "amx_bf16" in cpu.flags:
        return Peak(None, "unknown: bf16 runs on AMX tiles, whose peak is not modelled")
    if precision.startswith("bf16") and "avx512_bf16" in cpu.flags:
        return Peak(2 * fp32.gflops, f"2 x fp32 (avx512_bf16 dot product); fp32 = {fp32.how}")
    return Peak(None, f"unknown for {precision} on this CPU")


def gpu_peak(name: str, precision: str) -> Peak:
    """The card's dense bf16 tensor-core figure (float16 runs at the same rate); unknown for
    float32, and for cards not in the table."""
    tflops = next((t for key, t in GPU_BF16_TFLOPS if key in name), None)
    if tflops is None:
        return Peak(None, f"unknown: {name} is not in the table of dense bf16 figures")
    if not precision.startswith(("bf16", "16")):
        return Peak(None, f"unknown for {precision}: the table holds dense bf16 figures only")
    return Peak(tflops * 1000, f"{name}: {tflops:g} TFLOP/s dense bf16 (data sheet)")


def device_peak(precision: str, cores: int | None = None) -> tuple[str, Peak]:
    """This machine's device (the GPU a fit would use, else the CPU) and its peak for `precision`."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return name, gpu_peak(name, precision)
    cpu = read_cpu()
    return cpu.model, cpu_peak(cpu, cores or torch.get_num_threads(), precision)
