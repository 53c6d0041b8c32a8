"""Algorithm 1 in MRGAN.train_step: who is updated, the three modes, and that it learns."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf import data
from mrgan_tf.model import MODES, MRGAN, MRGANConfig


# Keyed by identity: SynMR and SynCT (and DisMR and DisCT) share layer names.
def snapshot(model):
    return {id(v): v.numpy().copy() for v in model.trainable_variables}


def changed(before, model):
    return {id(v) for v in model.trainable_variables if not np.array_equal(before[id(v)], v.numpy())}


def paths(variables):
    return {id(v) for v in variables}


@pytest.mark.parametrize("phase", ["unpaired", "paired"])
def test_each_update_touches_only_its_own_networks(tiny_model_factory, phase):
    model = tiny_model_factory("mrgan")
    rng = np.random.default_rng(0)
    src, real = (tf.constant(rng.uniform(-1, 1, (1, 32, 32, 1)), tf.float32) for _ in range(2))
    before = snapshot(model)
    model._update(model.to_mr, src=src, real=real, phase=phase)     # eager: one D then one G update
    expected = paths(model.dis_mr.variables_for(phase)) | paths(model.syn_mr.trainable_variables)
    assert changed(before, model) == expected
    other = "paired" if phase == "unpaired" else "unpaired"
    untouched = (paths(model.dis_mr.heads[other].trainable_variables) | paths(model.dis_mr.tails[other].trainable_variables)
                 | paths(model.syn_ct.trainable_variables) | paths(model.dis_ct.trainable_variables))
    assert not (changed(before, model) & untouched)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_modes_build_and_step(tiny_model_factory, tiny_records, mode):
    model = tiny_model_factory(mode)
    ds = data.training_dataset(tiny_records, mode, 2, seed=0)
    before = snapshot(model)
    counts = {name: int(opt.iterations.numpy()) for name, opt in model.optimizers.items()}
    hist = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0).history
    moved = changed(before, model)
    trained = {"mrgan": ("syn_mr", "syn_ct", "dis_mr", "dis_ct"), "paired": ("syn_mr", "dis_mr"),
               "unpaired": ("syn_mr", "syn_ct", "dis_mr", "dis_ct")}[mode]
    for net in ("syn_mr", "syn_ct", "dis_mr", "dis_ct"):
        net_paths = paths(getattr(model, net).trainable_variables)
        assert bool(net_paths & moved) == (net in trained), (mode, net)
    keys = set(hist)
    assert any(k.startswith("unpaired/") for k in keys) == MODES[mode].unpaired
    assert any(k.startswith("paired/") for k in keys) == MODES[mode].paired
    assert ("paired/syn_mr_cycle" in keys) == (mode == "mrgan")
    assert all(np.isfinite(v[-1]) for v in hist.values())
    # Each optimizer counted exactly Algorithm 1's updates per iteration.
    for name, opt in model.optimizers.items():
        assert int(opt.iterations.numpy()) - counts[name] == 2 * model.config.updates_per_iteration(name)


def test_paired_mode_learns_a_trivial_mapping(tiny_records):
    """MR = 1 - CT inside the body: L1 must fall well below where it started."""
    from mrgan_tf.model import make_optimizers
    cfg = MRGANConfig(mode="paired", image_size=32, ngf=8, n_blocks=1, ndf_scale=0.125,
                      augment=MRGANConfig().augment.__class__(flip=False, crop_margin=0, max_rotation_deg=0))
    model = MRGAN(cfg)
    model.compile(make_optimizers(cfg, lr=2e-3))
    ds = data.training_dataset(tiny_records, "paired", 4, seed=0)
    hist = model.fit(ds, steps_per_epoch=150, epochs=1, verbose=0).history["paired/syn_mr_l1"]
    start = hist[0] if len(hist) > 1 else None
    eval_batch = data.fixed_slices(tiny_records, 8, "paired_train")
    l1_end = float(tf.reduce_mean(tf.abs(model.syn_mr(eval_batch["ct"]) - eval_batch["mr"])))
    fresh = MRGAN(cfg)
    l1_start = float(tf.reduce_mean(tf.abs(fresh.syn_mr(eval_batch["ct"]) - eval_batch["mr"])))
    assert l1_end < 0.35 * l1_start, (l1_start, l1_end, start)


def test_fake_pool_returns_past_fakes_once_full():
    from mrgan_tf.model import FakePool
    pool = FakePool(2, (4, 4, 1))
    fakes = [tf.fill([1, 4, 4, 1], float(i)) for i in range(20)]
    outs = [float(pool.query(f, tf.constant([0, i]))[0, 0, 0, 0]) for i, f in enumerate(fakes)]
    assert outs[:2] == [0.0, 1.0]                     # filling: returned as they are
    old = [o for i, o in enumerate(outs) if o != float(i)]
    assert old and all(o < i for i, o in enumerate(outs) if o != float(i))   # some are past fakes
    assert int(pool.count.numpy()) == 2


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        MRGANConfig(mode="cyclegan")
    with pytest.raises(ValueError, match="multiple of 4"):
        MRGANConfig(image_size=30)
    cfg = MRGANConfig(mode="mrgan", paired_repeats=2)
    assert cfg.updates_per_iteration("syn_mr") == 3
    assert MRGANConfig(mode="paired").updates_per_iteration("syn_ct") == 0


def test_paired_baseline_for_synthetic_ct_trains_only_syn_ct(tiny_model_factory, tiny_records):
    model = tiny_model_factory("paired", paired_baseline_direction="mr2ct")
    assert model.trained_directions == ("ct",)
    before = snapshot(model)
    model.fit(data.training_dataset(tiny_records, "paired", 2, seed=0), steps_per_epoch=1, epochs=1, verbose=0)
    moved = changed(before, model)
    for net in ("syn_mr", "syn_ct", "dis_mr", "dis_ct"):
        assert bool(paths(getattr(model, net).trainable_variables) & moved) == (net in ("syn_ct", "dis_ct")), net
    assert MRGANConfig(mode="paired", paired_baseline_direction="mr2ct").updates_per_iteration("syn_mr") == 0
    with pytest.raises(ValueError, match="paired_baseline_direction"):
        MRGANConfig(mode="paired", paired_baseline_direction="both")
