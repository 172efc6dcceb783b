"""uiunet.layers: shapes on odd sizes, parameter counts and key names of the released blocks."""
import json

import pytest
import torch

from conftest import REFERENCE, needs_reference
from uiunet.layers import ICA, REBNCONV, RSU, RSU4F, SpatialAttention, pool2, upsample_like


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_pool_and_upsample_keep_odd_sizes():
    x = torch.rand(1, 2, 97, 131)
    assert pool2(x).shape == (1, 2, 49, 66)
    assert upsample_like(pool2(x), x).shape == x.shape


@pytest.mark.parametrize("L,cin,mid,cout,n", [
    (7, 3, 32, 64, 206_016), (6, 64, 32, 128, 305_856), (5, 128, 64, 256, 1_108_992), (4, 256, 128, 512, 3_986_688),
    (7, 128, 16, 64, 139_200)])
def test_rsu_params(L, cin, mid, cout, n):
    assert n_params(RSU(cin, mid, cout, L=L)) == n


@pytest.mark.parametrize("L", [4, 5, 6, 7])
def test_rsu_shapes_odd_size(L):
    blk = RSU(3, 4, 8, L=L).eval()
    with torch.no_grad():
        assert blk(torch.rand(2, 3, 97, 131)).shape == (2, 8, 97, 131)
    # one dilated convolution, at the bottom
    dil = {n: m.conv_s1.dilation[0] for n, m in blk.named_children()}
    assert dil.pop(f"rebnconv{L}") == 2 and set(dil.values()) == {1}


def test_rsu4f():
    blk = RSU4F(512, 256, 512)
    assert n_params(blk) == 10_034_688
    assert [m.conv_s1.dilation[0] for m in blk.children()] == [1, 1, 2, 4, 8, 4, 2, 1]
    with torch.no_grad():
        assert RSU4F(6, 4, 8).eval()(torch.rand(1, 6, 97, 131)).shape == (1, 8, 97, 131)


def test_ica_params_shapes_and_shared_post():
    assert [n_params(ICA(c)) for c in (512, 256, 128)] == [2_823_442, 707_218, 177_490]
    ica = ICA(8)
    high, low = torch.randn(2, 8, 97, 131), torch.randn(2, 8, 97, 131)
    out = ica(high, low)  # training mode: the shared `post` BatchNorm is updated twice
    assert out.shape == (2, 16, 97, 131)
    assert ica.post[1].num_batches_tracked.item() == 2
    ica.eval()
    with torch.no_grad():
        h = ica.feature_high(high)
        a_c = ica.topdown(h)
        a_s = ica.bottomup(low * a_c)
        torch.testing.assert_close(ica(high, low), torch.cat([ica.post(2 * low * a_c), ica.post(2 * h * a_s)], 1))
    assert a_c.shape == (2, 8, 1, 1) and a_s.shape == (2, 1, 97, 131)


def test_spatial_attention_has_no_bias_and_mean_first():
    sa = SpatialAttention()
    assert sa.conv1.bias is None and n_params(sa) == 18
    with torch.no_grad():
        sa.conv1.weight.zero_()
        sa.conv1.weight[0, 0, 1, 1] = 1.0  # channel 0 of the pooled pair: the mean
    x = torch.randn(1, 5, 7, 9)
    torch.testing.assert_close(sa(x), torch.sigmoid(x.mean(1, keepdim=True)))


@needs_reference
@pytest.mark.parametrize("prefix,block", [
    ("stage1", lambda: RSU(3, 32, 64, L=7)), ("stage4d", lambda: RSU(1024, 128, 256, L=4)),
    ("stage6", lambda: RSU4F(512, 256, 512)), ("fuse2", lambda: ICA(128))])
def test_block_keys_match_manifest(prefix, block):
    tensors = json.loads((REFERENCE / "official_state_dict_manifest.json").read_text())["tensors"]
    official = [(k[len(prefix) + 1:], tuple(s)) for _, k, s, _ in tensors if k.startswith(prefix + ".")]
    assert [(k, tuple(v.shape)) for k, v in block().state_dict().items()] == official


def test_rebnconv_keeps_size():
    assert REBNCONV(3, 5, dirate=4)(torch.rand(2, 3, 11, 13)).shape == (2, 5, 11, 13)
