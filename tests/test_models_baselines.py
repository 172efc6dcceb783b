"""uiunet.models (acm, unet_resnet, tbcnet, mdvsfa): the data-driven baselines (ACM, U-Net ResNet, TBC-Net, MDvsFA-cGAN) and Table II's first row."""
import pytest
import torch
import torch.nn.functional as F

from uiunet.layers import ICA
from uiunet.loss import get_loss
from uiunet.models import UIUNet, create_model, list_models

torch.set_num_threads(1)

# name: (parameters with 3 input channels, number of outputs)
MODELS = {"acm": (397_965, 1), "acm_fpn": (289_965, 1), "unet_resnet": (24_441_691, 6),
          "unet_resnet_ica": (24_819_363, 6), "tbcnet": (426_451, 1),
          "mdvsfa_cgan": (3_922_334, 3)}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def batch(size=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(2, c, size, size, generator=g), torch.zeros(2, 1, size, size)
    y[0, :, 20:24, 30:33] = 1
    y[1, :, 5:7, 50:53] = 1
    return x, y


def test_registered_through_create_model():
    # every architecture module registers itself when the package is imported, so the runners can name these models
    for name in MODELS:
        assert name in list_models() or create_model(name) is not None
    assert set(MODELS) <= set(list_models())


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_count(name):
    assert n_params(create_model(name)) == MODELS[name][0]


def test_parameter_counts_of_configurations():
    assert n_params(create_model("acm", blocks=4)) == 518_413  # the release's --blocks 4
    assert n_params(create_model("unet_resnet", depth=18)) == 14_333_531
    m = create_model("unet_resnet")
    assert n_params(m.stem) + n_params(m.layers) == 21_284_672  # ResNet-34 without its classifier
    g = create_model("mdvsfa_cgan", in_channels=1)  # the authors' single-channel input
    assert (n_params(g.g1), n_params(g.g2), n_params(g.disc)) == (3_138_497, 629_825, 151_276)
    assert n_params(create_model("tbcnet").scm) == 23_650


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_train_and_eval(name):
    torch.manual_seed(0)
    m = create_model(name)
    x, _ = batch(32 if name == "mdvsfa_cgan" else 64)
    for mode in (True, False):
        out = m.train(mode)(x)
        assert isinstance(out, tuple) and len(out) == MODELS[name][1]
        assert all(o.shape == (2, 1, *x.shape[-2:]) for o in out)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward(name):
    torch.manual_seed(0)
    m = create_model(name).train()
    x, y = batch(32 if name == "mdvsfa_cgan" else 64)
    loss = get_loss("bce")(m(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    # every parameter of the inference path gets a gradient (D and the SCM are trained by their own procedures)
    missing = [n for n, p in m.named_parameters() if not n.startswith(("disc", "scm")) and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing[:5]


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_odd_size(name):
    torch.manual_seed(0)
    m = create_model(name)
    x = torch.rand(1, 3, 61, 77)
    p = m.predict(x)
    assert p.shape == (1, 1, 61, 77) and not m.training and not p.requires_grad
    assert 0 <= p.min() and p.max() <= 1
    assert torch.equal(p, m.predict(x))


def test_padding_is_cropped_back():
    # ACM pads to a multiple of 16 with zeros: predicting 61x77 is predicting the padded 64x80 image, cropped
    torch.manual_seed(0)
    m = create_model("acm").eval()
    x = torch.rand(1, 3, 61, 77)
    torch.testing.assert_close(m.predict(x), m.predict(F.pad(x, (0, 3, 0, 3)))[..., :61, :77])


def test_acm_attention_is_asymmetric():
    torch.manual_seed(0)
    fuse = create_model("acm").fuse1.eval()
    hi, lo = torch.randn(2, 16, 12, 12), torch.randn(2, 16, 12, 12)
    td, bu = fuse.topdown(hi), fuse.bottomup(lo)
    assert td.shape == (2, 16, 1, 1) and bu.shape == (2, 16, 12, 12)  # global channel vs pointwise attention
    assert bu.std(dim=(2, 3)).mean() > 0
    hi2 = hi.clone()
    hi2[:, :, 0, 0] += 5.0  # one pixel of the deep feature changes the global weight of every pixel of the shallow one
    assert not torch.allclose(fuse.topdown(hi2), td)


def test_batch_of_one_in_training_is_refused():
    with pytest.raises(ValueError, match="batch of at least 2"):
        create_model("acm").train()(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="batch of at least 2"):
        create_model("unet_resnet_ica").train()(torch.rand(1, 3, 64, 64))
    assert create_model("unet_resnet").train()(torch.rand(1, 3, 64, 64))[0].shape == (1, 1, 64, 64)


def test_unet_resnet_ica_skips():
    m, plain = create_model("unet_resnet_ica"), create_model("unet_resnet")
    assert sum(isinstance(k, ICA) for k in m.modules()) == 4 and not any(isinstance(k, ICA) for k in plain.modules())
    # IC-A returns 2C channels for a skip of C: the decoder blocks see 2x256, 2x128, 2x64, 2x64, then 32
    assert [b[0].in_channels for b in m.decoder] == [512, 256, 128, 128, 32]
    assert [b[0].in_channels for b in plain.decoder] == [512 + 256, 256 + 128, 128 + 64, 64 + 64, 32]


def test_uiunet_no_ica_is_table_two_first_row():
    m = create_model("uiunet_no_ica")
    assert n_params(m) == 44_009_869
    assert not any(isinstance(k, ICA) for k in m.modules())
    assert list(m.state_dict()) == [k for k in UIUNet().state_dict() if not k.startswith("fuse")]
    # plain concatenation skips: each decoder stage takes [upsampled deeper, encoder skip]
    ins = [getattr(m, f"stage{k}d").rebnconvin.conv_s1.in_channels for k in (5, 4, 3, 2, 1)]
    assert ins == [512 + 512, 512 + 512, 256 + 256, 128 + 128, 64 + 64]
    out = m.eval()(torch.rand(1, 3, 64, 64))
    assert len(out) == 7 and out[0].shape == (1, 1, 64, 64)


def test_tbcnet_joint_loss():
    from uiunet.models.tbcnet import scm_pretrain_loss, tbcnet_losses
    torch.manual_seed(0)
    m = create_model("tbcnet").train()
    x, y = batch()
    y[1] = 0  # one image without a target: SCM label 0
    ls = tbcnet_losses(m, x, y, lam=0.5)
    torch.testing.assert_close(ls["loss"], ls["seg"] + 0.5 * ls["sem"])
    torch.testing.assert_close(ls["seg"], F.binary_cross_entropy_with_logits(m(x)[0], y))
    m.scm.requires_grad_(False)  # the paper's second phase: SCM frozen, the TEM learns through it
    tbcnet_losses(m, x, y)["loss"].backward()
    assert all(p.grad is None for p in m.scm.parameters())
    assert m.enc[0][0].weight.grad.abs().sum() > 0
    assert scm_pretrain_loss(m, y).ndim == 0


def test_mdvsfa_step_updates_all_three_networks():
    from uiunet.models.mdvsfa import mdvsfa_optimizer, mdvsfa_train_step, part_stepper
    torch.manual_seed(0)
    m = create_model("mdvsfa_cgan", in_channels=1)
    x, y = batch(32, c=1)
    opt, sched = mdvsfa_optimizer(m)
    before = {k: [p.detach().clone() for p in getattr(m, k).parameters()] for k in ("g1", "g2", "disc")}
    losses = mdvsfa_train_step(m, x * 2 - 1, y, part_stepper(opt))
    assert sorted(losses) == ["d", "g1", "g2"] and all(v == v and abs(v) < 1e6 for v in losses.values())
    for k, ps in before.items():
        assert any(not torch.equal(a, b) for a, b in zip(ps, getattr(m, k).parameters())), k
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("g1", 1e-4), ("g2", 1e-4), ("disc", 1e-5)]
    for _ in range(10): sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-5, 2e-5, 2e-6])   # x0.2 after 10 epochs


def test_one_adam_with_groups_equals_three_adams():
    # the Learner keeps one optimiser; stepping one group at a time must give the authors' three optimisers' updates
    from uiunet.models.mdvsfa import mdvsfa_optimizer, mdvsfa_train_step, part_stepper
    torch.manual_seed(0)
    a = create_model("mdvsfa_cgan", in_channels=1, width=8)
    b = create_model("mdvsfa_cgan", in_channels=1, width=8)
    b.load_state_dict(a.state_dict())
    opt, _ = mdvsfa_optimizer(a)
    three = {k: torch.optim.Adam(getattr(b, k).parameters(), lr=lr, betas=(0.5, 0.999))
             for k, lr in (("g1", 1e-4), ("g2", 1e-4), ("disc", 1e-5))}
    def separate(loss, part):
        o = three[next(k for k in three if getattr(b, k) is part)]
        o.zero_grad(set_to_none=True); loss.backward(); o.step()
    for seed in range(3):
        x, y = batch(32, c=1, seed=seed)
        la = mdvsfa_train_step(a, x, y, part_stepper(opt))
        lb = mdvsfa_train_step(b, x, y, separate)
        assert la == pytest.approx(lb, rel=1e-5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_mdvsfa_detection_is_the_mean_of_clipped_maps():
    torch.manual_seed(0)
    m = create_model("mdvsfa_cgan").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        p1, p2 = m.g1(x).clamp(0, 1), m.g2(x).clamp(0, 1)
    torch.testing.assert_close(m.predict(x), (p1 + p2) / 2)


def test_mdvsfa_discriminator_pooling_matches_the_release_at_128():
    x = torch.randn(3, 2, 128, 128)
    torch.testing.assert_close(F.adaptive_max_pool2d(x, 32), F.max_pool2d(F.max_pool2d(x, 2), 2))
    probs, feat = create_model("mdvsfa_cgan", in_channels=1).disc.train()(x)
    assert probs.shape == (3, 3) and feat.shape == (3, 1, 32, 32)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_learner_trains_and_reloads_acm(tmp_path):
    from uiunet.data import get_dataset
    from uiunet.learner import Learner
    from uiunet.models import load_run
    from uiunet.recipes import recipe_transforms
    tr, ev = recipe_transforms("standard", "synthetic", 64)
    train = get_dataset("synthetic", "train", n=4, size=64, transform=tr)
    val = get_dataset("synthetic", "val", n=2, size=64, transform=ev)
    learn = Learner(create_model("acm"), train, val, out_dir=tmp_path / "run", recipe="standard", batch_size=2,
                    progress=False, config=dict(model="acm"))
    hist = learn.fit(1)
    assert len(hist) == 1 and 0 <= hist[0]["val_iou"] <= 1
    model, state = load_run(tmp_path / "run")
    assert type(model).__name__ == "ACM" and state["epoch"] == 1


@pytest.mark.parametrize("name,kwargs,keys", [("tbcnet", {"scm_epochs": 1}, {"train_sem", "train_seg"}),
                                              ("mdvsfa_cgan", {}, {"train_d", "train_g1", "train_g2"})])
def test_train_runner_uses_the_models_own_procedure(tmp_path, name, kwargs, keys):
    import json
    import pandas as pd
    import papermill as pm
    from conftest import ROOT
    mk = {"width": 8} if name == "mdvsfa_cgan" else {}
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "t.ipynb"), kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False, parameters=dict(dataset="synthetic", train_split="train", val_split="val",
                        model=name, model_kwargs=mk, epochs=2, img_size=32, batch_size=2, recipe="standard", limit=4,
                        name="p", out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "res"), learner_kwargs=kwargs))
    run = json.loads((tmp_path / "res" / "p" / "run.json").read_text())
    assert run["config"]["learner"] in ("TBCLearner", "MDvsFALearner") and run["epochs_done"] == 2
    assert keys <= set(pd.read_csv(tmp_path / "res" / "p" / "log.csv").columns)
