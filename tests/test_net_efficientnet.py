"""EfficientNet-encoder 3D U-Net (nnunet_breast.networks.efficientnet): shapes, nnU-Net conventions, parameters.

Networks are narrow (width_multiplier 0.25) and patches small so the file runs in well under a minute on 2 CPU
cores; the parameter-count tests build full-width networks but never run them.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from dynamic_network_architectures.building_blocks.regularization import DropPath, make_divisible
from torch import nn

from nnunet_breast.networks.blocks import ConvNormAct3d, MBConv3d, SqueezeExcite3d
from nnunet_breast.networks.efficientnet import EfficientNetUNet3d, UNetDecoder3d, scaled_stages

ARCH = "nnunet_breast.networks.efficientnet.EfficientNetUNet3d"
ISO_STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 5
ISO_KERNELS = [[3, 3, 3]] * 6
ANISO_STRIDES = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
ANISO_KERNELS = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
NARROW = dict(width_multiplier=0.25)

# B0 table written out again, independently of the module: (expand, kernel, stride, out_channels, repeats)
B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
      (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def ds_scales(strides):
    """nnUNetTrainer._get_deep_supervision_scales, verbatim."""
    return list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def efficientnet_features_params(in_channels: int, ndim: int, stem: int = 32, se_ratio: float = 0.25) -> int:
    """Parameters of EfficientNet-B0's feature extractor (stem conv .. stage 7, no head), conv weights without
    bias (each followed by an affine norm: 2 params per channel), SE convs with bias."""
    total = in_channels * stem * 3 ** ndim + 2 * stem
    c_in = stem
    for expand, k, _, c_out, repeats in B0:
        for _ in range(repeats):
            mid = c_in * expand
            if expand != 1:
                total += c_in * mid + 2 * mid  # expand 1x1
            total += mid * k ** ndim + 2 * mid  # depthwise
            sq = max(1, int(c_in * se_ratio))
            total += mid * sq + sq + sq * mid + mid  # SE fc1, fc2 (bias)
            total += mid * c_out + 2 * c_out  # project 1x1
            c_in = c_out
    return total


def test_param_formula_matches_published_2d_b0():
    # timm efficientnet_b0 has 5,288,548 parameters; minus conv_head (320*1280 + 2*1280) and the
    # 1000-class classifier (1280*1000 + 1000) leaves the feature extractor the formula describes.
    assert efficientnet_features_params(3, ndim=2) == 5_288_548 - (320 * 1280 + 2 * 1280) - (1280 * 1000 + 1000)


def test_b0_encoder_parameter_count_matches_table():
    net = EfficientNetUNet3d(1, 3, ISO_STRIDES, ISO_KERNELS, variant="b0", stem_features=16)
    light_stem = 1 * 16 * 27 + 2 * 16
    expected = light_stem + efficientnet_features_params(16, ndim=3)
    assert n_params(net.encoder) == expected
    blocks = [m for m in net.modules() if isinstance(m, MBConv3d)]
    assert len(blocks) == 16
    assert [m.drop_path_rate for m in blocks] == pytest.approx([0.2 * i / 16 for i in range(16)])  # linear
    assert sum(isinstance(m.drop_path, DropPath) for m in blocks) == 16 - 7  # residual blocks only
    assert net.encoder.output_channels == [16, 16, 24, 40, 112, 320]


def test_isotropic_shapes_and_levels():
    net = EfficientNetUNet3d(1, 3, ISO_STRIDES, ISO_KERNELS, **NARROW)
    x = torch.randn(1, 1, 64, 64, 64)
    skips = net.encoder(x)
    assert [tuple(s.shape[2:]) for s in skips] == [(64,) * 3, (32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3, (2,) * 3]
    assert net.encoder.downsampling_points == [0, 2, 3, 4, 6]
    assert net.encoder.block_level["stage5_block0"] == 4 and net.encoder.block_stride["stage5_block0"] == (1, 1, 1)
    out = net.decoder(skips)  # == net(x), without running the encoder twice
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 64, 64, 64)


def test_anisotropic_shapes_strides_and_kernels():
    net = EfficientNetUNet3d(2, 4, ANISO_STRIDES, ANISO_KERNELS, **NARROW)
    enc = net.encoder
    assert enc.block_stride["conv_stem"] == (1, 2, 2) and enc.block_stride["stage2_block0"] == (1, 2, 2)
    assert enc.block_stride["stage3_block0"] == (2, 2, 2)
    stem = enc.levels[1].conv_stem.conv
    assert stem.kernel_size == (1, 3, 3) and stem.stride == (1, 2, 2)
    assert enc.levels[0].stem.conv.kernel_size == (1, 3, 3)
    assert enc.levels[1].stage1_block0.depthwise.conv.kernel_size == (1, 3, 3)  # kernel 1 along z at level 1
    assert enc.levels[2].stage2_block0.depthwise.conv.kernel_size == (3, 3, 3)
    assert enc.levels[3].stage3_block0.depthwise.conv.kernel_size == (5, 5, 5)  # table kernel 5 at level 3
    assert enc.levels[3].stage3_block0.depthwise.conv.stride == (2, 2, 2)
    assert net.decoder.stages[-1][0].conv.kernel_size == (1, 3, 3)
    assert net.decoder.upsample[-1].stride == (1, 2, 2)  # level 1 -> level 0
    x = torch.randn(1, 2, 16, 64, 64)
    skips = enc(x)
    assert [tuple(s.shape[2:]) for s in skips] == [(16, 64, 64), (16, 32, 32), (16, 16, 16), (8, 8, 8), (4, 4, 4),
                                                   (4, 2, 2)]
    assert net.decoder(skips).shape == (1, 4, 16, 64, 64)


@pytest.mark.parametrize(
    "strides,patch,points",
    [
        ([[1, 1, 1]] + [[2, 2, 2]] * 4, (32, 32, 32), [0, 2, 3, 4]),
        ([[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]], (8, 128, 128),
         [0, 2, 3, 4, 5, 6]),
    ],
    ids=["D4", "D6"],
)
def test_other_depths_deep_supervision_shapes(strides, patch, points):
    net = EfficientNetUNet3d(1, 2, strides, [[3, 3, 3]] * len(strides), deep_supervision=True, **NARROW)
    assert net.encoder.downsampling_points == points
    outs = net(torch.randn(1, 1, *patch))
    assert isinstance(outs, list) and len(outs) == len(strides) - 1
    for out, scale in zip(outs, ds_scales(strides)):
        assert tuple(out.shape) == (1, 2, *[int(round(p * s)) for p, s in zip(patch, scale)])
    # stages beyond the 4th downsampling join the bottleneck when D=4
    if len(strides) == 5:
        assert net.encoder.block_stride["stage6_block0"] == (1, 1, 1)
        assert net.encoder.output_channels[-1] == net.encoder.stage_specs[-1].out_channels


def test_deep_supervision_anisotropic_matches_nnunet_scales_and_toggle():
    net = EfficientNetUNet3d(1, 3, ANISO_STRIDES, ANISO_KERNELS, deep_supervision=True, **NARROW)
    patch = (16, 64, 64)
    x = torch.randn(1, 1, *patch)
    net.eval()
    with torch.no_grad():
        outs = net(x)
    scales = ds_scales(ANISO_STRIDES)
    assert len(outs) == len(ANISO_STRIDES) - 1 == len(scales)
    assert [tuple(o.shape[2:]) for o in outs] == [tuple(int(round(p * s)) for p, s in zip(patch, sc))
                                                   for sc in scales]
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 64, 64), (16, 32, 32), (16, 16, 16), (8, 8, 8), (4, 4, 4)]
    # nnU-Net's switch: nnUNetTrainer.set_deep_supervision_enabled sets network.decoder.deep_supervision (checked
    # in the installed source; importing the trainer module would cost ~10-20 s)
    trainer_src = Path(importlib.util.find_spec("nnunetv2.training.nnUNetTrainer.nnUNetTrainer").origin).read_text()
    assert "mod.decoder.deep_supervision = enabled" in trainer_src
    net.decoder.deep_supervision = False
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, *patch)
    assert torch.equal(outs[0], single)  # the full-res head is the same with or without deep supervision


def test_depth_and_width_multipliers():
    b0 = EfficientNetUNet3d(1, 2, ISO_STRIDES, ISO_KERNELS, variant="b0")
    b1 = EfficientNetUNet3d(1, 2, ISO_STRIDES, ISO_KERNELS, variant="b1")
    b2 = EfficientNetUNet3d(1, 2, ISO_STRIDES, ISO_KERNELS, variant="b2")
    count = lambda net: sum(isinstance(m, MBConv3d) for m in net.modules())  # noqa: E731
    assert count(b0) == 16 and count(b1) == 23  # ceil(1.1 * r): 2, 3, 3, 4, 4, 5, 2
    assert [s.out_channels for s in b1.encoder.stage_specs] == [s[3] for s in B0]  # B1 is not wider
    assert [s.out_channels for s in b2.encoder.stage_specs] == [16, 24, 48, 88, 120, 208, 352]  # timm B2
    assert all(c2 >= c1 for c1, c2 in zip(b1.encoder.output_channels, b2.encoder.output_channels))
    assert b2.encoder.output_channels[-1] > b1.encoder.output_channels[-1]
    assert n_params(b0) < n_params(b1) < n_params(b2)
    # timm rounding (multiple of 8, +8 when rounding lost > 10 %), B3 stem 40
    assert [s.out_channels for s in scaled_stages(1.2, 1.4)] == [24, 32, 48, 96, 136, 232, 384]
    assert [s.repeats for s in scaled_stages(1.2, 1.4)] == [2, 3, 3, 5, 5, 6, 2]
    assert make_divisible(32 * 1.2) == 40 and make_divisible(16 * 0.25) == 8 and make_divisible(40 * 0.25) == 16
    assert b2.encoder.levels[1].conv_stem.out_channels == 32 and scaled_stages(1.2, 1.0)[0].out_channels == 24
    with pytest.raises(ValueError, match="multipliers"):
        scaled_stages(0.0, 1.0)
    # explicit multipliers override the variant
    custom = EfficientNetUNet3d(1, 2, ISO_STRIDES, ISO_KERNELS, variant="b3", width_multiplier=0.25,
                                depth_multiplier=1.0)
    assert count(custom) == 16 and custom.encoder.output_channels[-1] == make_divisible(320 * 0.25) == 80


def test_too_many_or_too_few_stages_raise():
    with pytest.raises(ValueError, match="at most 7 downsamplings"):
        EfficientNetUNet3d(1, 2, [[1, 1, 1]] + [[1, 2, 2]] * 8, [[3, 3, 3]] * 9, **NARROW)
    with pytest.raises(ValueError, match="at least 2"):
        EfficientNetUNet3d(1, 2, [[1, 1, 1]], [[3, 3, 3]], **NARROW)
    with pytest.raises(ValueError, match="variant"):
        EfficientNetUNet3d(1, 2, ISO_STRIDES, ISO_KERNELS, variant="b7")
    # D = 7 is the maximum: every stage starts a level
    net = EfficientNetUNet3d(1, 2, [[1, 1, 1]] + [[1, 2, 2]] * 7, [[3, 3, 3]] * 8, **NARROW)
    assert net.encoder.downsampling_points == [0, 2, 3, 4, 5, 6, 7]


def test_get_network_from_plans_json_round_trip():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs = dict(strides=ANISO_STRIDES, kernel_sizes=ANISO_KERNELS, variant="b0", width_multiplier=0.25,
                  depth_multiplier=None, stem_features=8, decoder_convs=2,
                  norm_op="torch.nn.modules.instancenorm.InstanceNorm3d", norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin="torch.nn.SiLU", nonlin_kwargs={"inplace": True}, drop_path_rate=0.1, se_ratio=0.25,
                  deep_supervision=False)
    arch_kwargs = json.loads(json.dumps(kwargs))
    net = get_network_from_plans(ARCH, arch_kwargs, ["norm_op", "nonlin"], 1, 5, allow_init=True,
                                 deep_supervision=True)
    assert isinstance(net, EfficientNetUNet3d) and net.decoder.deep_supervision
    assert isinstance(net.encoder.levels[0].stem.norm, nn.InstanceNorm3d)
    direct = EfficientNetUNet3d(1, 5, ANISO_STRIDES, ANISO_KERNELS, width_multiplier=0.25, stem_features=8,
                                decoder_convs=2, norm_op=nn.InstanceNorm3d, nonlin=nn.SiLU, drop_path_rate=0.1)
    assert n_params(net) == n_params(direct)
    # strings are accepted by a direct call too (plans JSON without nnU-Net's import step)
    from_strings = EfficientNetUNet3d(1, 5, **{**arch_kwargs, "deep_supervision": True})
    assert n_params(from_strings) == n_params(direct)
    assert isinstance(from_strings.encoder.levels[1].conv_stem.act, nn.SiLU)
    # allow_init=True ran network.initialize: residual branches start at zero, biases are zero
    residual = [m for m in net.modules() if isinstance(m, MBConv3d) and m.has_residual]
    assert residual and all(torch.all(m.project.norm.weight == 0) for m in residual)
    assert torch.all(net.decoder.upsample[0].bias == 0)
    assert isinstance(net.decoder, UNetDecoder3d)  # re-exported from efficientnet (lives in effnet_decoder)
    outs = net(torch.randn(1, 1, 16, 64, 64))
    assert len(outs) == 5 and outs[0].shape == (1, 5, 16, 64, 64)


def test_backward_reaches_stem_and_eval_is_deterministic():
    torch.manual_seed(0)
    net = EfficientNetUNet3d(1, 2, ANISO_STRIDES, ANISO_KERNELS, drop_path_rate=0.5, deep_supervision=True,
                             nonlin_kwargs={"inplace": True}, **NARROW)
    net.apply(net.initialize)
    x = torch.randn(2, 1, 16, 32, 32)
    outs = net(x)
    loss = sum(o.square().mean() / 2 ** i for i, o in enumerate(outs))
    loss.backward()
    for p in (net.encoder.levels[0].stem.conv.weight, net.encoder.levels[1].conv_stem.conv.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_autocast_bfloat16_cpu():
    net = EfficientNetUNet3d(1, 3, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], [[1, 3, 3]] + [[3, 3, 3]] * 3,
                             deep_supervision=True, **NARROW)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = net(x)
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    assert len(outs) == 3
    for o in outs:
        assert o.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(o.float()).all()
    assert torch.isfinite(net.encoder.levels[0].stem.conv.weight.grad).all()


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_conv_feature_map_size_counts_conv_outputs(deep_supervision):
    net = EfficientNetUNet3d(1, 3, ANISO_STRIDES, ANISO_KERNELS, deep_supervision=deep_supervision, **NARROW)
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.numel()))
             for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    patch = (16, 64, 64)
    with torch.no_grad():
        net(torch.randn(1, 1, *patch))
    for h in hooks:
        h.remove()
    assert net.compute_conv_feature_map_size(patch) == sum(seen)
    sizes = [net.compute_conv_feature_map_size(p) for p in [(16, 64, 64), (16, 64, 96), (32, 64, 96),
                                                            (32, 128, 128)]]
    assert all(a < b for a, b in zip(sizes, sizes[1:]))


def test_blocks():
    # MBConv: residual only with stride 1 and in == out; expand ratio 1 has no expand conv
    res = MBConv3d(16, 16, 6, (1, 3, 3), 1, drop_path=0.5)
    assert res.has_residual and res.depthwise.conv.groups == 96 and res.depthwise.conv.padding == (0, 1, 1)
    assert isinstance(res.se, SqueezeExcite3d) and res.se.squeeze_channels == 4  # from the block input (16)
    down = MBConv3d(16, 24, 6, 5, (1, 2, 2))
    assert not down.has_residual
    assert down(torch.randn(1, 16, 4, 8, 8)).shape == (1, 24, 4, 4, 4)
    dw = MBConv3d(8, 8, 1, 3, 1)
    assert isinstance(dw.expand, nn.Identity) and dw.mid_channels == 8
    assert n_params(dw) == (8 * 27 + 16) + (8 * 2 + 2 + 2 * 8 + 8) + (8 * 8 + 16)
    assert SqueezeExcite3d(48, 2, 0.25).squeeze_channels == 1
    # per-sample stochastic depth (DNA's DropPath): whole samples dropped, survivors scaled, identity in eval
    sd = res.drop_path
    assert isinstance(sd, DropPath) and sd.drop_prob == 0.5 and isinstance(down.drop_path, nn.Identity)
    x = torch.ones(256, 2, 2, 2, 2)
    y = sd.train()(x)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))
    assert 0 < (per_sample[:, 0] == 0).sum() < 256
    assert torch.equal(sd.eval()(x), x)
    with pytest.raises(ValueError, match="drop path"):
        MBConv3d(16, 16, drop_path=1.0)
    block = ConvNormAct3d(2, 4, (1, 3, 3), (1, 2, 2), norm_op=None, nonlin=None)
    assert block.conv.bias is not None and block(torch.randn(1, 2, 3, 9, 9)).shape == (1, 4, 3, 5, 5)
    assert block.compute_conv_feature_map_size((3, 9, 9)) == 4 * 3 * 5 * 5


def test_odd_input_size_is_padded_back():
    net = EfficientNetUNet3d(1, 2, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3, **NARROW).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 13, 14, 15))
    assert out.shape == (1, 2, 13, 14, 15)
    assert math.isfinite(out.sum().item())


def test_separable_decoder_option_keeps_shapes_and_cuts_parameters():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    kernels = [[1, 3, 3]] + [[3, 3, 3]] * 3
    conv = EfficientNetUNet3d(1, 4, strides, kernels, width_multiplier=0.25, decoder_block="conv").eval()
    sep = EfficientNetUNet3d(1, 4, strides, kernels, width_multiplier=0.25, decoder_block="separable").eval()
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert conv(x).shape == sep(x).shape == (1, 4, 8, 32, 32)
    n = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    assert n(sep) < n(conv)
    with pytest.raises(ValueError, match="decoder_block"):
        EfficientNetUNet3d(1, 4, strides, kernels, decoder_block="dense")


def test_channels_last_keeps_the_network_and_its_weights_and_drops_instance_norms():
    """The CPU fast path's network: same outputs (fp32), same state-dict keys, no InstanceNorm3d left, every
    activation channels-last (the instance norm returned contiguous tensors)."""
    from nnunet_breast.trainers.cpu import channels_last

    torch.manual_seed(0)
    net = EfficientNetUNet3d(1, 3, ANISO_STRIDES, ANISO_KERNELS, **NARROW).eval()
    for m in net.modules():         # non-trivial affine parameters, so that sharing them is tested
        if isinstance(m, nn.InstanceNorm3d):
            nn.init.normal_(m.weight, 1.0, 0.2), nn.init.normal_(m.bias, 0.0, 0.2)
    x = torch.randn(1, 1, 16, 64, 64)
    keys = list(net.state_dict())
    with torch.no_grad():
        before = net(x)
        fast = channels_last(net)
        after = fast(x.contiguous(memory_format=torch.channels_last_3d))
    assert fast is net and list(net.state_dict()) == keys
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in net.modules()) > 20
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    layouts = []                    # under the fast path's bf16 autocast, every activation stays channels-last
    for m in net.modules():
        m.register_forward_hook(lambda m, i, o: layouts.append(
            o.is_contiguous(memory_format=torch.channels_last_3d)) if isinstance(o, torch.Tensor) else None)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(x.contiguous(memory_format=torch.channels_last_3d))
    assert len(layouts) > 100 and all(layouts)
