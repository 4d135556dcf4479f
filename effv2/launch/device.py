"""Device and execution-context setup for one process, driven by the ``hardware`` group."""

from __future__ import annotations

import contextlib
import logging
import os

from effv2.config.schema import HardwareConfig
from effv2.errors import UserError

log = logging.getLogger(__name__)

# MindSpore 2.10's bundled oneDNN picks a reference convolution on AVX-512 CPUs: 20-30x slower.
CPU_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
CPU_ISA_CAP = "AVX2"
# no cap: where effv2's kernels run every depthwise and regular convolution of a training run, the
# 1x1 ones left to MindSpore have JIT kernels at any ISA (B0 step 339 vs 356 ms at AVX2 on a 2-core
# Xeon, benchmarks/bench_levers.py; ONEDNN_VERBOSE shows no reference kernel)
CPU_ISA_UNCAPPED = "ALL"

_DEVICE_WORDS = {
    "GPU": "an NVIDIA GPU and MindSpore's GPU build",
    "Ascend": "Ascend devices and MindSpore's Ascend build",
}


def cpu_isa_cap(hw: HardwareConfig, task: str) -> str:
    """The oneDNN instruction-set cap a CPU process of ``task`` needs: AVX2, unless it trains
    through effv2's kernels (effv2.kernels.cpu_kernels_wanted) and the oneDNN convolution kernel
    builds here (it builds now, before MindSpore loads; cached per machine), when no MindSpore
    convolution needs the cap."""
    from effv2.kernels import cpu_kernels_wanted

    if task != "train" or not cpu_kernels_wanted(hw):
        return CPU_ISA_CAP
    from effv2.kernels.build import onednn_conv_library

    return CPU_ISA_UNCAPPED if onednn_conv_library() is not None else CPU_ISA_CAP


def prepare_environment(hw: HardwareConfig, task: str) -> None:
    """Environment that must be in place before mindspore is imported."""
    if hw.device_target.name == "CPU" and CPU_ISA_VARIABLE not in os.environ:
        cap = cpu_isa_cap(hw, task)
        os.environ[CPU_ISA_VARIABLE] = cap
        why = (
            "effv2's kernels run the depthwise and regular convolutions; MindSpore's 1x1 ones need no cap"
            if cap == CPU_ISA_UNCAPPED
            else "MindSpore's oneDNN runs convolutions 20-30x slower on AVX-512 CPUs without it"
        )
        log.info("hardware=%s: set %s=%s (%s); set the variable yourself to override", hw.name, CPU_ISA_VARIABLE,
                 cap, why)  # fmt: skip


@contextlib.contextmanager
def _quiet_stderr():
    """MindSpore prints library-loading failures straight to fd 2 while probing backends."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def backend_available(target: str) -> bool:
    import mindspore as ms

    with _quiet_stderr():
        return bool(ms.hal.is_available(target))


def check_device(hw: HardwareConfig, task: str) -> None:
    """Fail fast, with one line, when this machine cannot serve the task on ``hw``."""
    if task == "train" and not hw.can_train:
        raise UserError(
            f"hardware={hw.name} runs exported models only; "
            "task=train needs a training target (cpu, gpu_*, ascend910_*)"
        )
    target = hw.device_target.name
    if task == "train" and hw.sync_bn and target == "CPU" and hw.nodes * hw.devices_per_node > 1:
        raise UserError(
            f"hardware={hw.name} hardware.sync_bn=true: MindSpore 2.10 has no CPU kernel for SyncBatchNorm; "
            "use hardware.sync_bn=false on CPU (BN statistics are then averaged over the ranks at each evaluation)"
        )
    if target != "CPU" and not backend_available(target):
        raise UserError(f"hardware={hw.name} needs {_DEVICE_WORDS[target]}; found none on this machine")


def configure_context(hw: HardwareConfig) -> None:
    import mindspore as ms

    mode = ms.GRAPH_MODE if hw.mode.name == "graph" else ms.PYNATIVE_MODE
    ms.set_context(mode=mode, jit_config={"jit_level": hw.jit_level})
    target = hw.device_target.name
    # the rank-table method and the launchers/ scripts name the device through DEVICE_ID
    if target != "CPU" and "DEVICE_ID" in os.environ:
        ms.set_device(target, int(os.environ["DEVICE_ID"]))
    else:
        ms.set_device(target)
