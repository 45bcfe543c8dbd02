"""The Trainer's precision, chosen by the hardware when the user does not choose it.

`bf16-mixed` is the fastest setting where the device computes bfloat16 natively (AMX or
AVX512-BF16 on a CPU, an Ampere or newer GPU), and a disaster where it does not: on a CPU with
AVX2 only, bf16 autocast is emulated and runs ~80x slower than float32. So no recipe hard-codes a
precision; `resolve_precision` picks one per machine, and an explicit `--trainer.precision` wins.
"""

from dataclasses import dataclass

import torch

from fashion_lightning.internals import cpu_bf16_units


@dataclass(frozen=True)
class Capabilities:
    """What the machine can compute fast; read from torch, replaceable in tests."""

    cuda: bool
    cuda_bf16: bool
    cuda_name: str
    cpu_avx512_bf16: bool
    cpu_amx: bool
    cpu_capability: str

    @classmethod
    def detect(cls) -> "Capabilities":
        cuda = torch.cuda.is_available()
        units = cpu_bf16_units()
        return cls(
            cuda=cuda,
            cuda_bf16=cuda and torch.cuda.is_bf16_supported(including_emulation=False),
            cuda_name=torch.cuda.get_device_name() if cuda else "",
            cpu_avx512_bf16=units["AVX512-BF16"],
            cpu_amx=units["AMX"],
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        )


def resolve_precision(accelerator: str, caps: Capabilities) -> tuple[str, str]:
    """The precision for `accelerator` ("auto", "cpu", "gpu", "cuda", "mps", ...) on a machine
    with `caps`, and the reason, as one clause for the log line."""
    on_cuda = caps.cuda and accelerator in ("auto", "gpu", "cuda")
    if on_cuda and caps.cuda_bf16:
        return "bf16-mixed", f"{caps.cuda_name} computes bfloat16 natively"
    if on_cuda:
        return "16-mixed", f"{caps.cuda_name} has no native bfloat16; float16 with loss scaling"
    if accelerator not in ("auto", "cpu"):
        return "32-true", "mixed precision is chosen automatically only on CPUs and CUDA GPUs"
    if caps.cpu_amx or caps.cpu_avx512_bf16:
        units = ", ".join(
            name
            for name, has in (("AMX", caps.cpu_amx), ("AVX512-BF16", caps.cpu_avx512_bf16))
            if has
        )
        return "bf16-mixed", f"this CPU computes bfloat16 natively ({units})"
    return "32-true", (
        f"this CPU ({caps.cpu_capability}) has no bfloat16 units, so bf16 would be emulated "
        f"and far slower"
    )
