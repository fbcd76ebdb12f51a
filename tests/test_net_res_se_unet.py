"""ClipInputLayer (raw HU -> window / binary / metal / passthrough) and ResSEUNet3d (clip paper's Res-SE-U-Net)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from nnunet_breast.networks.input_layer import ClipInputLayer
from nnunet_breast.networks.plans import PAPER_CLIP_KERNELS, PAPER_CLIP_STRIDES, clip_arch_kwargs
from nnunet_breast.networks.plans import RES_SE_UNET_CLASS as NETWORK_CLASS_NAME
from nnunet_breast.networks.plans import RES_SE_UNET_REQUIRES_IMPORT as ARCH_KWARGS_REQ_IMPORT
from nnunet_breast.networks.res_se_unet import ResSEUNet3d, SqueezeExcitation


def paper_arch_kwargs(**clip_kwargs) -> dict:
    """The paper's 6-stage topology at widths 4..32 (tests)."""
    return clip_arch_kwargs(PAPER_CLIP_STRIDES, PAPER_CLIP_KERNELS, feature_base=4, feature_cap=32, **clip_kwargs)

torch.set_num_threads(2)

ISO = dict(n_stages=6, features_per_stage=[4, 8, 16, 32, 32, 32], strides=[1, 2, 2, 2, 2, 2], kernel_sizes=3,
           n_blocks_per_stage=[1, 2, 2, 2, 2, 2], n_conv_per_stage_decoder=[1, 1, 1, 1, 1])
ANISO = dict(n_stages=4, features_per_stage=[4, 8, 16, 16],
             strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]],
             kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
             n_blocks_per_stage=[1, 2, 2, 2], n_conv_per_stage_decoder=[1, 1, 1])


def _hu(values, extra=None):
    """(1, C, n, 1, 1) tensor: channel 0 = the HU values, further channels from `extra`."""
    chans = [torch.tensor(values, dtype=torch.float32)]
    for e in extra or []:
        chans.append(torch.as_tensor(e, dtype=torch.float32))
    return torch.stack(chans)[None, :, :, None, None]


def _net(cfg, input_channels=1, num_classes=2, **kw):
    torch.manual_seed(0)
    net = ResSEUNet3d(input_channels, num_classes, **cfg, **kw)
    net.apply(net.initialize)
    return net


def _ds_shapes(strides, patch):
    strides = [[s] * 3 if isinstance(s, int) else s for s in strides]
    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]
    return [tuple(int(round(p * f)) for p, f in zip(patch, sc)) for sc in scales]


# ---------------------------------------------------------------------------------------------- input layer
def test_input_layer_exact_values():
    hu = [-1000.0, -500.0, -200.0, 0.0, 100.0, 200.0, 299.0, 299.9, 300.0, 3071.0]
    out = ClipInputLayer()(_hu(hu))[0, :, :, 0, 0]
    assert out.shape == (2, len(hu)) and out.dtype == torch.float32
    assert out[0].tolist() == [-1.0, -1.0, -1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert out[1].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    win = ClipInputLayer(window=(-100, 300), binary_threshold_hu=None)(_hu([-1000.0, 100.0, 300.0]))
    assert win.flatten().tolist() == [-1.0, 0.0, 1.0]


def test_input_layer_metal_window_exact_values():
    hu = [-1000.0, 0.0, 300.0, 1200.0, 1650.0, 3000.0, 3071.0]
    out = ClipInputLayer(metal_window=(300.0, 3000.0))(_hu(hu))[0, :, :, 0, 0]
    assert out.shape == (3, len(hu))
    assert out[2].tolist() == pytest.approx([0.0, 0.0, 0.0, 1 / 3, 0.5, 1.0, 1.0])
    # the window and binary channels are unchanged by the extra channel
    assert torch.equal(out[:2], ClipInputLayer()(_hu(hu))[0, :, :, 0, 0])
    with pytest.raises(ValueError, match="metal_window"):
        ClipInputLayer(metal_window=(3000.0, 300.0))


@pytest.mark.parametrize("binary,passthrough,metal,names", [
    (300.0, 0, None, ["window", "binary"]),
    (None, 0, None, ["window"]),
    (300.0, 1, None, ["window", "binary", "passthrough_0"]),
    (None, 1, None, ["window", "passthrough_0"]),
    (None, 1, (300.0, 3000.0), ["window", "metal", "passthrough_0"]),
    (300.0, 0, (300.0, 3000.0), ["window", "binary", "metal"]),
])
def test_input_layer_channel_counts_and_passthrough(binary, passthrough, metal, names):
    layer = ClipInputLayer(binary_threshold_hu=binary, passthrough_channels=passthrough, metal_window=metal)
    assert layer.out_channels == len(names) and layer.channel_names == names
    prob = [0.0, 0.25, 0.123456789, 1.0]
    x = _hu([-1000.0, 0.0, 300.0, 1000.0], [prob] * passthrough)
    out = layer(x)
    assert out.shape[1] == layer.out_channels
    if passthrough:
        assert torch.equal(out[:, -1], x[:, 1])   # passed through bit-exactly
    with pytest.raises(ValueError, match="input channel"):
        layer(_hu([0.0], [[0.0]] * (passthrough + 1)))


def test_input_layer_autocast_bf16_threshold_and_gradients():
    layer = ClipInputLayer()
    x = _hu([299.0, 300.0, 299.9, 301.0, 0.0]).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.float32
    assert out[0, 1, :, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert torch.equal(out, layer(x))                       # deterministic, autocast-independent
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # only the window channel carries gradient: 2/400 inside the window, 0 where clamped
    assert x.grad[0, 0, :, 0, 0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 2 / 400])


def test_input_layer_rejects_bad_config():
    with pytest.raises(ValueError):
        ClipInputLayer(window=(200, -200))
    with pytest.raises(ValueError):
        ClipInputLayer(passthrough_channels=-1)


# ---------------------------------------------------------------------------------------------- network
# 6 isotropic stages = 5 halvings: a 32^3 patch would leave a 1^3 bottleneck, which InstanceNorm rejects
# ("Expected more than 1 spatial element"), so the isotropic case runs at 64^3 (bottleneck 2^3)
@pytest.mark.parametrize("cfg,patch", [(ISO, (64, 64, 64)), (ANISO, (8, 32, 24))], ids=["iso6", "aniso4"])
def test_deep_supervision_shapes(cfg, patch):
    net = _net(cfg, deep_supervision=True)
    x = torch.randn(2, 1, *patch) * 500
    out = net(x)
    assert isinstance(out, (list, tuple)) and len(out) == cfg["n_stages"] - 1
    assert [tuple(o.shape[2:]) for o in out] == _ds_shapes(cfg["strides"], patch)
    assert all(o.shape[:2] == (2, 2) for o in out)
    net.decoder.deep_supervision = False                   # what nnUNetTrainer.set_deep_supervision_enabled does
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (2, 2, *patch)
    assert net.compute_conv_feature_map_size(patch) > 0


def test_paper_topology_and_se_count():
    net = _net(ISO)
    assert net.n_residual_blocks == 11 and net.n_skip_connections == 5
    se = [m for m in net.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se) == 1 and se[0] is net.se_blocks[-1] and se[0].channels == 32
    net_all = _net(ISO, se_at="all")
    assert sum(isinstance(m, SqueezeExcitation) for m in net_all.modules()) == ISO["n_stages"]
    net_none = _net(ISO, se_at="none")
    assert sum(isinstance(m, SqueezeExcitation) for m in net_none.modules()) == 0
    with pytest.raises(ValueError, match="se_at"):
        ResSEUNet3d(1, 2, **ISO, se_at="decoder")


def test_input_channels_validated():
    with pytest.raises(ValueError, match="input_channels"):
        ResSEUNet3d(2, 2, **ISO)                                # CT + map, but no passthrough configured
    with pytest.raises(ValueError, match="input_channels"):
        ResSEUNet3d(1, 2, **ISO, passthrough_channels=1)
    net = _net(ANISO, input_channels=2, passthrough_channels=1, binary_threshold_hu=None)
    assert net.input_layer.out_channels == 2
    assert net.encoder.stem.convs[0].conv.in_channels == 2
    assert _net(ANISO, input_channels=2, passthrough_channels=1).encoder.stem.convs[0].conv.in_channels == 3
    assert net(torch.zeros(1, 2, 8, 32, 24)).shape == (1, 2, 8, 32, 24)


def test_get_network_from_plans_matches_direct_construction():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kw = paper_arch_kwargs(passthrough_channels=1)
    kw["dropout_op"] = "torch.nn.modules.dropout.Dropout3d"
    kw["dropout_op_kwargs"] = {"p": 0.0, "inplace": True}
    kw = json.loads(json.dumps(kw))                        # what a plans.json round trip gives (lists, no tuples)
    net = get_network_from_plans(NETWORK_CLASS_NAME, kw, ARCH_KWARGS_REQ_IMPORT, input_channels=2,
                                 output_channels=2, allow_init=True, deep_supervision=True)
    assert type(net) is ResSEUNet3d and net.decoder.deep_supervision is True
    assert any(isinstance(m, nn.Dropout3d) for m in net.modules())
    direct = ResSEUNet3d(2, 2, **ISO, conv_bias=True, norm_op=nn.InstanceNorm3d,
                         norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=nn.Dropout3d,
                         dropout_op_kwargs={"p": 0.0, "inplace": True}, nonlin=nn.LeakyReLU,
                         nonlin_kwargs={"inplace": True}, passthrough_channels=1)
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(net) == n_params(direct)
    assert list(net.state_dict()) == list(direct.state_dict())

    # dropout_op None (the usual plans value) also goes through the req-import path
    kw_none = json.loads(json.dumps(paper_arch_kwargs(binary_threshold_hu=None)))
    net2 = get_network_from_plans(NETWORK_CLASS_NAME, kw_none, ARCH_KWARGS_REQ_IMPORT, 1, 2, deep_supervision=False)
    assert net2.input_layer.out_channels == 1 and net2.decoder.deep_supervision is False
    out = net2(torch.full((1, 1, 64, 64, 64), -1000.0))
    assert out.shape == (1, 2, 64, 64, 64) and torch.isfinite(out).all()


def test_initialize_zeroes_last_norm_of_residual_blocks():
    net = _net(ISO)
    block = net.encoder.stages[1].blocks[0]
    assert torch.count_nonzero(block.conv2.norm.weight) == 0
    assert all(m.bias is None or torch.count_nonzero(m.bias) == 0
               for m in net.modules() if isinstance(m, nn.Conv3d))


def test_prediction_depends_on_hu_only_through_window_and_binary():
    net = _net(ANISO, binary_threshold_hu=300.0).eval()
    torch.manual_seed(1)
    base = torch.rand(1, 1, 8, 32, 24) * 300 - 150              # inside the window
    a, b = base.clone(), base.clone()
    a[..., :4, :, :] = -1000.0                                  # air ...
    b[..., :4, :, :] = -500.0                                   # ... and fat/lung both clamp to window -1
    a[..., 4:, :8, :] = 400.0                                   # bone ...
    b[..., 4:, :8, :] = 3071.0                                  # ... and metal: window 1, binary 1
    with torch.no_grad():
        assert torch.equal(net(a), net(b))
        c = b.clone()
        c[..., 4:, :8, :] = 250.0                               # window 1 but binary 0 -> must differ
        assert not torch.allclose(net(b), net(c))
        net_nobin = _net(ANISO, binary_threshold_hu=None).eval()
        assert torch.equal(net_nobin(b), net_nobin(c))           # without binary channel, 250 == 3071
