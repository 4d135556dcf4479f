"""CPU kernels of our own, compiled ahead of time into MindSpore AOT custom operators
(``ops.Custom(..., func_type="aot")``): the C++ sources ship with the package and are compiled
once per machine into the cache folder at first use (``build.py``); without a compiler the model
keeps MindSpore's own operators and the log says so."""

from __future__ import annotations


def cpu_kernels_wanted(hardware: object) -> bool:
    """Whether a run on ``hardware`` (a HardwareConfig) runs effv2's CPU kernels: on CPU unless
    ``hardware.cpu_kernels=false``, and in float32 only (with ``hardware.amp_level`` O1-O3 the run
    keeps MindSpore's operators and its log says so). Imports no MindSpore: the ISA cap is chosen
    with it before MindSpore loads."""
    return (
        hardware.device_target.name == "CPU"  # type: ignore[attr-defined]
        and bool(hardware.cpu_kernels)  # type: ignore[attr-defined]
        and hardware.amp_level == "O0"  # type: ignore[attr-defined]
    )


def kernels_off_reason(hardware: object) -> str:
    """Why a CPU run on ``hardware`` keeps MindSpore's operators, for its log line."""
    if not hardware.cpu_kernels:  # type: ignore[attr-defined]
        return "hardware.cpu_kernels=false: MindSpore's own operators"
    return (
        f"hardware.amp_level={hardware.amp_level} runs MindSpore's own operators (effv2's kernels are "  # type: ignore[attr-defined]
        "float32; hardware.amp_level=O0 runs them)"
    )
