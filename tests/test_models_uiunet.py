"""uiunet.models.uiunet: parameter counts, official checkpoint parity and golden outputs, variants, predict, BN folding."""
import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import REFERENCE, needs_reference
from uiunet.models import (UIUNet, check_input, count_macs, create_model, fuse_bn, list_models, load_official,
                          optimize_for_inference, save_official)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def manifest():
    return json.loads((REFERENCE / "official_state_dict_manifest.json").read_text())


def reference_state_dict(man, phase=0.0):
    """Weights of the fixture, written from the rule in ../shared/reference/README.md (independently of the notebook)."""
    sd = OrderedDict()
    for k, key, shape, role in man["tensors"]:
        if role == "bn_num_batches_tracked":
            sd[key] = torch.tensor(0, dtype=torch.int64)
            continue
        s = np.sin(0.37 * np.arange(math.prod(shape), dtype=np.float64) + 1.3 * k + phase).reshape(shape)
        v = {"conv_weight": 1.5 * s / math.sqrt(math.prod(shape[1:])), "conv_bias": 0.1 * s, "bn_weight": 1.0 + 0.2 * s,
             "bn_bias": 0.1 * s, "bn_running_mean": 0.1 * s, "bn_running_var": 1.0 + 0.5 * np.abs(s)}[role]
        sd[key] = torch.from_numpy(v.astype(np.float32))
    return sd


@pytest.fixture(scope="module")
def full():
    torch.manual_seed(0)
    return UIUNet()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return UIUNet(width=0.25)


def test_param_counts(full):
    assert n_params(full) == 50_541_461
    assert n_params(UIUNet(in_channels=1)) == 50_540_309
    assert n_params(create_model("uiunet_no_ica")) == 44_009_869


@needs_reference
def test_state_dict_keys_shapes_order_match_manifest(full):
    man = manifest()
    assert [(k, list(v.shape)) for k, v in full.state_dict().items()] == [(t[1], t[2]) for t in man["tensors"]]
    assert n_params(full) == man["params"]


@needs_reference
def test_golden_outputs():
    golden = np.load(REFERENCE / "official_outputs_phase0_96x80.npz")
    model = load_official(reference_state_dict(manifest()))
    assert not model.training
    with torch.no_grad():
        outs = model(torch.from_numpy(golden["input"]))
    assert len(outs) == 7
    for i, o in enumerate(outs):
        np.testing.assert_allclose(torch.sigmoid(o).numpy(), golden[f"out{i}"], rtol=0, atol=1e-5, err_msg=f"out{i}")


@needs_reference
def test_save_official_writes_manifest_layout(tmp_path, full):
    path = tmp_path / "uiunet.pth"
    save_official(full, path)
    sd = torch.load(path, weights_only=True)
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(t[1], t[2]) for t in manifest()["tensors"]]
    assert all(v.is_contiguous() for v in sd.values())


def test_save_load_round_trip(tmp_path, tiny):
    tiny.eval()
    x = torch.rand(2, 3, 45, 37)
    with torch.no_grad():
        expected = torch.stack(tiny(x))
    for name in ("tiny.pth", "tiny.safetensors"):
        save_official(nn.DataParallel(tiny), tmp_path / name)
        again = load_official(tmp_path / name, width=0.25)
        with torch.no_grad():
            assert torch.equal(torch.stack(again(x)), expected)
    prefixed = OrderedDict(("module." + k, v) for k, v in tiny.state_dict().items())
    assert torch.equal(load_official(prefixed, width=0.25).side3.weight, tiny.side3.weight)


def test_load_official_refusals(tmp_path, tiny):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00 this is not a checkpoint" * 20)
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_official(garbage)
    with pytest.raises(ValueError, match="not a state_dict"):
        load_official({"epoch": 3, "lr": 1e-3})

    sd = OrderedDict(tiny.state_dict())
    del sd["stage4d.rebnconv2d.conv_s1.bias"]
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as e:
        load_official(sd, width=0.25)
    assert "1 missing: stage4d.rebnconv2d.conv_s1.bias" in str(e.value)
    assert "1 unexpected: extra.weight" in str(e.value)

    sd = OrderedDict(tiny.state_dict())
    sd["side2.weight"] = torch.zeros(1, 7, 3, 3)
    with pytest.raises(ValueError, match=r"side2.weight \(1, 7, 3, 3\) \(model: \(1, 16, 3, 3\)\)"):
        load_official(sd, width=0.25)


def test_save_official_refuses_folded_model(tmp_path, tiny):
    with pytest.raises(ValueError, match="before fuse_bn"):
        save_official(fuse_bn(tiny), tmp_path / "x.pth")


@pytest.mark.parametrize("name", ["uiunet", "uiunet_small", "uiunet_tiny", "uiunet_no_ica"])
def test_variant_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name).train()  # batch 2: BatchNorm after IC-A's global pooling needs >= 2 in training
    x = torch.rand(2, 3, 64, 64)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 64, 64)] * 7
    loss = sum(F.binary_cross_entropy_with_logits(o, torch.zeros_like(o)) for o in outs)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.stage1.rebnconvin.conv_s1.weight.grad.abs().sum() > 0


def test_registry():
    assert {"uiunet", "uiunet_small", "uiunet_tiny", "uiunet_no_ica"} <= set(list_models())
    with pytest.raises(ValueError, match="available: .*uiunet_tiny"):
        create_model("u2net")
    with pytest.raises(ValueError, match="unknown pretrained tag 'sirst'.*available: none published yet"):
        create_model("uiunet", pretrained="sirst")
    assert n_params(create_model("uiunet_small")) < n_params(create_model("uiunet")) / 3


def test_macs_pinned():
    assert count_macs("uiunet", (320, 320)) == 84_839_775_904
    assert count_macs("uiunet", (256, 256)) == 54_297_565_696
    assert count_macs("uiunet_no_ica", (320, 320)) == 58_598_246_400


def test_predict_odd_size(full):
    x = torch.rand(1, 3, 97, 131)
    p = full.predict(x)
    assert p.shape == (1, 1, 97, 131) and not p.requires_grad and not full.training
    assert 0 <= p.min() and p.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(p, torch.sigmoid(full(x)[0]))


def test_train_and_eval_return_seven_logits(tiny):
    x = torch.rand(2, 3, 33, 50)
    for mode in (True, False):
        outs = tiny.train(mode)(x)
        assert len(outs) == 7 and all(o.shape == (2, 1, 33, 50) for o in outs)
    tiny.eval()
    with torch.no_grad():
        fused, *sides = tiny(x)
        torch.testing.assert_close(fused, tiny.outconv(torch.cat(sides, 1)))


def test_input_check_messages(tiny):
    tiny.eval()
    with pytest.raises(ValueError, match=r"x\[None\]"):
        tiny.predict(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="in_channels=1"):
        tiny.predict(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="x.float"):
        tiny.predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch of at least 2"):
        check_input(torch.rand(1, 3, 32, 32), tiny.train())
    tiny.eval()


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    return model


@pytest.mark.parametrize("width", [0.25, 1.0])
def test_bn_folded_model_matches(width):
    torch.manual_seed(1)
    model = _randomize_bn(UIUNet(width=width)).eval()
    fast = optimize_for_inference(model, precision="fp32")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.rand(1, 3, 96, 80)
    torch.testing.assert_close(fast.predict(x), model.predict(x), rtol=0, atol=1e-5)
    half = optimize_for_inference(model, precision="bf16")
    p_half, p_ref = half.predict(x), model.predict(x)
    assert half.precision == "bf16" and p_half.dtype == torch.float32
    assert 0 < (p_half - p_ref).abs().max() < 0.05  # bfloat16 rounding moves the probabilities a little, not more


def test_a_truncated_checkpoint_gets_no_u2net_hint(tmp_path):
    "issue 15: the 'a U2-Net checkpoint?' hint is for files without any IC-A weights, not for a file cut short."
    model = UIUNet(width=0.25)
    sd = model.state_dict()
    keys = list(sd)
    cut = OrderedDict((k, sd[k]) for k in keys[:-10])                 # the end of the file missing (IC-A comes last)
    with pytest.raises(ValueError) as e: load_official(cut, width=0.25)
    assert "10 missing" in str(e.value) and "U2-Net" not in str(e.value)
    no_ica = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("fuse"))
    with pytest.raises(ValueError, match="a U2-Net checkpoint"): load_official(no_ica, width=0.25)
    bad = OrderedDict(sd); bad["outconv.weight"] = bad["outconv.weight"].to(torch.int64)
    with pytest.raises(ValueError, match="1 not floating-point: outconv.weight torch.int64"): load_official(bad, width=0.25)
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut\.pth does not fit UIUNet"): load_official(tmp_path / "cut.pth", width=0.25)
