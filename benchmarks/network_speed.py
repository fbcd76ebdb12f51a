"""Forward time, parameters and GFLOPs: EfficientNet-B0 U-Net vs nnU-Net's PlainConvUNet (vs MONAI).

Our network and PlainConvUNet get the same nnU-Net plans (patch 64 x 128 x 128, 21 outputs) and run in the
same process, once with the anisotropic strides nnU-Net plans for 1 x 1 x 3 mm (``--topology aniso``,
default: z is not downsampled at the first level) and once with isotropic strides (``--topology iso``, the
topology MONAI's FlexibleUNet always uses). The JSON line on stdout gives the ratios.

On a CPU each network is timed in fp32 as nnU-Net runs it and as the prediction fast path runs it: channels-last,
instance norms as their channels-last equivalent (``nnunet_breast.trainers.cpu.channels_last``), and with
``--precision fp32 bf16`` (default where the CPU computes bf16 natively) under bf16 autocast, the same for both
networks. ``--compile`` also times the fast path's form under ``torch.compile`` (inductor, weights frozen as
constants, as for inference) and reports the compile time of the first call.

  python benchmarks/network_speed.py [--threads 2] [--device cpu|cuda] [--repeats 3] [--precision fp32 bf16]
  python benchmarks/network_speed.py --compile                      # + the fast path under torch.compile
  python benchmarks/network_speed.py --whole-case --device cuda     # + sliding-window inference of a full case
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

TOPOLOGIES = {
    "aniso": ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], [[1, 3, 3]] + [[3, 3, 3]] * 5),
    "iso": ([[1, 1, 1]] + [[2, 2, 2]] * 5, [[3, 3, 3]] * 6),
}
PATCH = (64, 128, 128)
CLASSES = 21


def networks(topology: str) -> dict[str, torch.nn.Module]:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_breast.networks.efficientnet import EfficientNetUNet3d

    strides, kernels = TOPOLOGIES[topology]
    nets = {
        "effnetb0_unet": EfficientNetUNet3d(1, CLASSES, strides, kernels),
        "nnunet_plainconvunet": PlainConvUNet(1, 6, [32, 64, 128, 256, 320, 320], torch.nn.Conv3d, kernels, strides,
                                              2, CLASSES, 2, True, torch.nn.InstanceNorm3d,
                                              {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU,
                                              {"inplace": True}),
    }
    try:
        from monai.networks.nets import FlexibleUNet

        nets["monai_flexibleunet_b0"] = FlexibleUNet(1, CLASSES, "efficientnet-b0", pretrained=False, spatial_dims=3)
    except Exception:   # MONAI is optional: compared only when installed
        pass
    return nets


def _autocast(x):
    """nnU-Net runs CUDA training and inference under fp16 autocast; CPU stays fp32."""
    return torch.autocast("cuda", enabled=x.is_cuda)


def _forward_input(x, precision: str, fast: bool):
    """(input, autocast context) of a timed forward pass: ``fast`` or ``bf16``: on a CPU, the fast path's way
    (channels-last input; bf16 autocast on a CPU), otherwise nnU-Net's (:func:`_autocast`)."""
    if fast or precision == "bf16":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return x, torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else _autocast(x)


def forward_seconds(net, x, repeats: int, precision: str = "fp32", fast: bool = False) -> float:
    """Seconds per forward pass; ``fast`` or ``bf16``: on a CPU, the fast path's way (the caller converted
    ``net`` with ``channels_last``)."""
    x, cast = _forward_input(x, precision, fast)
    with torch.no_grad(), cast:
        net(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / repeats


def compiled(net, x, precision: str) -> tuple[torch.nn.Module, float]:
    """``net`` under ``torch.compile`` with its weights frozen as constants (inductor's inference mode: oneDNN's
    prepacked convolutions), and the seconds of the first call, which compiles."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    net = torch.compile(net)
    x, cast = _forward_input(x, precision, fast=True)
    t = time.perf_counter()
    with torch.no_grad(), cast:
        net(x)
    return net, time.perf_counter() - t


def train_step_seconds(net, x, repeats: int) -> tuple[float, float]:
    """One nnU-Net-like training iteration (batch of 2, AMP + GradScaler, SGD): seconds and peak GiB."""
    batch = x.repeat(2, 1, 1, 1, 1)
    target = torch.randint(0, CLASSES, (2, *PATCH), device=x.device)
    opt = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler(enabled=x.is_cuda)
    net.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(x):
            loss = torch.nn.functional.cross_entropy(net(batch), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if x.is_cuda else float("nan")
    net.eval()
    return (time.perf_counter() - t) / repeats, peak


def gflops(net, x) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def whole_case(nets, device: torch.device) -> dict:
    """Sliding-window inference of a full-size synthetic case with nnU-Net's predictor, same settings."""
    import numpy as np
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_breast.synth.cohort import make_case

    case = make_case("breast", 0, seed=0, size="full")
    sz, sy, sx = case.grid.spacing[2], case.grid.spacing[1], case.grid.spacing[0]
    # resample to the patch's 1 x 1 x 3 mm grid cheaply (nearest) so both networks see the same array
    zoom = np.array([sz / 3.0, sy / 1.0, sx / 1.0])
    idx = [np.clip(np.round(np.arange(int(n * f)) / f).astype(int), 0, n - 1) for n, f in zip(case.hu.shape, zoom)]
    data = torch.from_numpy(((np.clip(case.hu, -160, 240) - 40) / 200)[np.ix_(*idx)][None].astype(np.float32))
    out = {"case_shape_zyx": list(data.shape[1:])}
    for name in ("effnetb0_unet", "nnunet_plainconvunet"):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        # the sliding window needs only these of a trained model: network, patch size, number of outputs
        predictor.network = nets[name].to(device).eval()
        predictor.configuration_manager = SimpleNamespace(patch_size=list(PATCH))
        predictor.label_manager = SimpleNamespace(num_segmentation_heads=CLASSES)
        predictor.allowed_mirroring_axes = None
        t = time.perf_counter()
        with torch.no_grad():
            predictor.predict_sliding_window_return_logits(data)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_whole_case_s"] = round(time.perf_counter() - t, 2)
    out["whole_case_speedup"] = round(out["nnunet_plainconvunet_whole_case_s"] / out["effnetb0_unet_whole_case_s"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--topology", choices=tuple(TOPOLOGIES), default="aniso")
    ap.add_argument("--whole-case", action="store_true")
    ap.add_argument("--train-step", action="store_true", help="also time a training iteration (batch 2)")
    ap.add_argument("--precision", nargs="+", choices=("fp32", "bf16"),
                    help="CPU forward precisions (default fp32, + bf16 where the CPU computes it natively)")
    ap.add_argument("--compile", action="store_true", help="CPU: also the fast path under torch.compile (inductor)")
    args = ap.parse_args()
    from nnunet_breast.trainers.cpu import channels_last, cpu_bf16_supported

    precisions = args.precision or (["fp32", "bf16"] if args.device == "cpu" and cpu_bf16_supported() else ["fp32"])
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True      # as nnU-Net's trainer and predictor set it
    nets = {k: v.eval().to(device) for k, v in networks(args.topology).items()}
    x = torch.randn(1, 1, *PATCH, device=device)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{args.threads} threads",
              "topology": args.topology, "patch_zyx": list(PATCH), "outputs": CLASSES}
    for name, net in nets.items():
        result[f"{name}_params_M"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 2)
        result[f"{name}_gflops"] = round(gflops(net, x), 1)
        result[f"{name}_forward_s"] = round(forward_seconds(net, x, args.repeats), 4)
        if args.train_step:
            step, peak = train_step_seconds(net, x, args.repeats)
            result[f"{name}_train_step_s"], result[f"{name}_train_peak_GiB"] = round(step, 4), round(peak, 2)
    if device.type == "cpu":
        for name, net in nets.items():      # after the fp32 runs: channels_last changes the modules
            net = net.to(memory_format=torch.channels_last_3d)
            if "bf16" in precisions:        # channels-last memory alone (PyTorch's CPU instance norm copies out of it)
                result[f"{name}_forward_bf16_instance_norm_s"] = round(forward_seconds(net, x, args.repeats, "bf16"), 4)
            net = channels_last(net)        # the fast path's form
            for precision in precisions:
                key = "bf16" if precision == "bf16" else "fp32_channels_last"
                result[f"{name}_forward_{key}_s"] = round(forward_seconds(net, x, args.repeats, precision, True), 4)
                if args.compile:
                    fast, seconds = compiled(net, x, precision)
                    result[f"{name}_compile_{precision}_s"] = round(seconds, 1)
                    result[f"{name}_forward_{precision}_compiled_s"] = round(
                        forward_seconds(fast, x, args.repeats, precision, True), 4)
                    torch._dynamo.reset()
    for suffix in ("", "_fp32_channels_last", "_bf16", "_fp32_compiled", "_bf16_compiled"):
        ours = result.get(f"effnetb0_unet_forward{suffix}_s")
        if ours is None:
            continue
        result[f"speedup_vs_plainconvunet{suffix}"] = round(result[f"nnunet_plainconvunet_forward{suffix}_s"] / ours, 2)
        if f"monai_flexibleunet_b0_forward{suffix}_s" in result:
            result[f"speedup_vs_monai{suffix}"] = round(result[f"monai_flexibleunet_b0_forward{suffix}_s"] / ours, 2)
    if args.train_step:
        result["train_speedup_vs_plainconvunet"] = round(result["nnunet_plainconvunet_train_step_s"]
                                                         / result["effnetb0_unet_train_step_s"], 2)
    if args.whole_case:
        result.update(whole_case(nets, device))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
