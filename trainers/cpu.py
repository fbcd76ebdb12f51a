"""Training on a CPU: bf16 autocast where the CPU computes bf16 natively (AMX / AVX512-BF16).

nnU-Net's trainer autocasts on CUDA only; on a CPU it trains in fp32. Recent x86 CPUs run bf16 convolutions
natively, so the forward and backward passes run in bf16 there (losses and optimiser state stay fp32; bf16
has fp32's range, so no gradient scaling). ``nnUNet_breast_cpu_bf16=0`` switches it off, ``=1`` forces it.
"""
from __future__ import annotations

import contextlib
import os

import torch

ENV_SWITCH = "nnUNet_breast_cpu_bf16"


def cpu_bf16_supported() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (emulated bf16 would be slower than fp32)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_cpu_bf16(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    switch = os.environ.get(ENV_SWITCH, "auto").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if switch in ("1", "true", "yes", "on"):
        return True
    return cpu_bf16_supported()


def channels_last(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` in channels-last 3D memory with each ``InstanceNorm3d`` as the same normalisation in a
    channels-last kernel: ``GroupNorm`` with one group per channel, sharing its parameters (state-dict keys
    unchanged). PyTorch's CPU instance norm has no channels-last kernel: it copies every activation to
    contiguous memory and hands the next convolution a contiguous tensor (docs/benchmarks.md, network speed)."""
    for name, child in list(network.named_children()):
        if isinstance(child, torch.nn.InstanceNorm3d) and not child.track_running_stats:
            norm = torch.nn.GroupNorm(child.num_features, child.num_features, child.eps, child.affine)
            if child.affine:
                norm.weight, norm.bias = child.weight, child.bias
            setattr(network, name, norm)
        else:
            channels_last(child)
    return network.to(memory_format=torch.channels_last_3d)


def cpu_autocast(device: torch.device):
    """bf16 autocast on a bf16-capable CPU, else nothing (CUDA autocast stays nnU-Net's)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if use_cpu_bf16(device) else contextlib.nullcontext()


class CPUAutocast:
    """Trainer mixin (before nnU-Net's trainer in the bases): train and validation steps under
    :func:`cpu_autocast`."""

    def on_train_start(self):
        super().on_train_start()
        if self.device.type == "cpu":
            self.print_to_log_file(f"CPU training in {'bf16 autocast' if use_cpu_bf16(self.device) else 'fp32'} "
                                   f"({torch.get_num_threads()} threads)")

    def train_step(self, batch: dict) -> dict:
        with cpu_autocast(self.device):
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        with cpu_autocast(self.device):
            return super().validation_step(batch)
