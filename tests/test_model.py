"""Algorithm 1 in MRGAN.train_step: who is updated, the three modes, and that it learns."""
import numpy as np
import pytest
import tensorflow as tf

from mrgan_tf.modeling.batch import decode
from mrgan_tf.modeling.mrgan import MODES, MRGAN, MRGANConfig
from mrgan_tf.training import data


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
    model._update(model.directions["mr"], src=src, real=real, phase=phase)     # eager: one D then one G update
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
    from mrgan_tf.modeling.mrgan import make_optimizers
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
    from mrgan_tf.modeling.mrgan import FakePool
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


# ---------------------------------------------------------------- the authors' variant, flag by flag
AUTHORS = dict(paired_cycle=False, paired_generator_repeats=2, real_label=0.9, paired_real_label=1.0,
               generator_target="real_label", first_conv_norm=False, unpaired_cycle="both")


@pytest.fixture(scope="module")
def authors_step(tiny_records):
    """A tiny MR-GAN with the authors' options and eight optimizers after one traced iteration."""
    from conftest import TINY

    from mrgan_tf.modeling.mrgan import make_optimizers
    cfg = MRGANConfig(mode="mrgan", **TINY, **AUTHORS)
    model = MRGAN(cfg)
    model.compile(make_optimizers(cfg, separate_phases=True))
    hist = model.fit(data.training_dataset(tiny_records, "mrgan", 1, seed=0), steps_per_epoch=1, epochs=1,
                     verbose=0).history
    return model, hist


def test_paired_generators_update_twice_per_discriminator_update(authors_step):
    model, _ = authors_step
    applies = {key: int(opt.iterations.numpy()) for key, opt in model.optimizers.items()}
    assert applies == {f"{net}/{phase}": 2 if (phase, net[:3]) == ("paired", "syn") else 1
                       for net in ("syn_mr", "syn_ct", "dis_mr", "dis_ct") for phase in ("unpaired", "paired")}
    for key, n in applies.items():
        assert model.config.updates_per_iteration(*key.split("/")) == n, key


def test_paired_repeats_repeat_discriminator_and_generator(tiny_model_factory, tiny_records):
    model = tiny_model_factory("mrgan", paired_repeats=2)
    counts = {name: int(opt.iterations.numpy()) for name, opt in model.optimizers.items()}
    model.fit(data.training_dataset(tiny_records, "mrgan", 1, seed=0), steps_per_epoch=1, epochs=1, verbose=0)
    # Shared optimizers: one unpaired update plus two paired ones, for generators and discriminators alike.
    assert {n: int(o.iterations.numpy()) - counts[n] for n, o in model.optimizers.items()} == dict.fromkeys(
        ("syn_mr", "syn_ct", "dis_mr", "dis_ct"), 3)


def test_no_paired_cycle_term_without_paired_cycle(authors_step):
    _, hist = authors_step
    assert "unpaired/syn_mr_cycle" in hist and "unpaired/syn_ct_cycle" in hist
    assert not [k for k in hist if k.startswith("paired/") and k.endswith("_cycle")]
    assert {"paired/syn_mr_l1", "paired/syn_mr_adv", "paired/syn_ct_l1"} <= set(hist)
    assert MRGANConfig(paired_cycle=False).mode_spec.paired_cycle is False
    assert MRGANConfig(mode="paired", paired_cycle=True).mode_spec.paired_cycle is False   # baselines keep theirs


def test_discriminator_body_first_conv_without_instance_norm(authors_step, tiny_model_factory):
    model, _ = authors_step
    paper = tiny_model_factory("mrgan")
    for dis, ref in ((model.dis_mr, paper.dis_mr), (model.dis_ct, paper.dis_ct)):
        names = [layer.name for layer in dis.body.layers]
        assert "body_in0" not in names and "body_in1" in names and "body_conv0" in names
        assert "body_in0" in [layer.name for layer in ref.body.layers]
        assert len(dis.weights) == len(ref.weights) - 2               # gamma and beta of body_in0
        assert [w.path for w in dis.unpaired_head.weights] == [w.path for w in ref.unpaired_head.weights]


def frozen_update(phase, **overrides):
    """One eager SynMR/DisMR update with learning rate 0: its logged losses are those of the networks as they are.

    Returns the logs, the model, the source and real images, and DisMR's logits for real and fake.
    """
    from conftest import TINY

    from mrgan_tf.modeling.mrgan import make_optimizers
    cfg = MRGANConfig(mode="mrgan", **TINY, **overrides)
    model = MRGAN(cfg)
    model.compile(make_optimizers(cfg, lr=0.0))
    rng = np.random.default_rng(1)
    src, real = (tf.constant(rng.uniform(-1, 1, (2, 32, 32, 1)), tf.float32) for _ in range(2))
    logs = model._update(model.directions["mr"], src=src, real=real, phase=phase)
    fake = model.syn_mr(src, training=True)
    if phase == "unpaired":
        judged = model.dis_mr.unpaired(real, training=True), model.dis_mr.unpaired(fake, training=True)
    else:
        judged = model.dis_mr.paired(src, real, training=True), model.dis_mr.paired(src, fake, training=True)
    return logs, model, src, real, *judged


def test_lsgan_generator_target_is_the_real_label(tiny_records):
    from mrgan_tf.modeling import losses
    logs, _, _, _, real, fake = frozen_update("unpaired", real_label=0.9, generator_target="real_label")
    np.testing.assert_allclose(logs["unpaired/syn_mr_adv"], float(tf.reduce_mean((fake - 0.9) ** 2)), rtol=1e-5)
    assert abs(float(logs["unpaired/syn_mr_adv"]) - float(losses.lsgan_generator(fake))) > 1e-4
    np.testing.assert_allclose(logs["unpaired/dis_mr"], float(losses.lsgan_discriminator(real, fake, 0.9)),
                               rtol=1e-5)
    logs, _, _, _, _, fake = frozen_update("unpaired", real_label=0.9)   # the paper's default: target 1
    np.testing.assert_allclose(logs["unpaired/syn_mr_adv"], float(tf.reduce_mean((fake - 1.0) ** 2)), rtol=1e-5)


def test_unpaired_generator_minimises_both_cycles(authors_step):
    from mrgan_tf.modeling import losses
    logs, model, src, real, _, _ = frozen_update("unpaired", unpaired_cycle="both")
    back = model.syn_mr(model.syn_ct(real, training=True), training=True)     # MR -> SynCT -> SynMR
    np.testing.assert_allclose(logs["unpaired/syn_mr_cycle_back"], 10.0 * float(losses.l1(back, real)), rtol=1e-5)
    np.testing.assert_allclose(logs["unpaired/syn_mr"], sum(float(logs[f"unpaired/syn_mr_{k}"])
                                                            for k in ("adv", "cycle", "cycle_back")), rtol=1e-5)
    _, hist = authors_step
    assert {"unpaired/syn_mr_cycle_back", "unpaired/syn_ct_cycle_back"} <= set(hist)
    assert not [k for k in hist if k.startswith("paired/") and k.endswith("cycle_back")]
    logs = frozen_update("unpaired")[0]                                  # the paper's: own cycle only
    assert "unpaired/syn_mr_cycle_back" not in logs and "unpaired/syn_mr_cycle" in logs


def test_paired_real_label_overrides_the_real_label(tiny_records):
    from mrgan_tf.modeling import losses
    logs, _, _, _, real, fake = frozen_update("paired", real_label=0.9, paired_real_label=1.0,
                                              generator_target="real_label")
    np.testing.assert_allclose(logs["paired/dis_mr"], float(losses.nll_discriminator(real, fake, 1.0)), rtol=1e-5)
    assert abs(float(logs["paired/dis_mr"]) - float(losses.nll_discriminator(real, fake, 0.9))) > 1e-4
    np.testing.assert_allclose(logs["paired/syn_mr_adv"], float(losses.nll_generator(fake)), rtol=1e-5)  # NLL: 1
    assert MRGANConfig(real_label=0.9).real_label_for("paired") == 0.9


def test_authors_options_validation():
    with pytest.raises(ValueError, match="generator_target"):
        MRGANConfig(generator_target="0.9")
    with pytest.raises(ValueError, match="unpaired_cycle must be one of"):
        MRGANConfig(unpaired_cycle="dual")
    with pytest.raises(ValueError, match="paired_generator_repeats must be at least 1"):
        MRGANConfig(paired_generator_repeats=0)
    with pytest.raises(ValueError, match="n_iter must be at least 1"):
        MRGANConfig(n_iter=0)
    cfg = MRGANConfig(paired_generator_repeats=2, n_iter=3)
    assert (cfg.updates_per_iteration("syn_mr"), cfg.updates_per_iteration("dis_mr")) == (3 + 6, 3 + 3)


# ---------------------------------------------------------------- n_iter: fresh batches, unpaired steps first
class RecordingMRGAN(MRGAN):
    """Records which update ran, in order, and the images it was given (run eagerly)."""

    def __init__(self, config):
        super().__init__(config)
        self.trace = []

    def _update(self, d, src, real, phase, step=0):
        self.trace.append((phase, d.name, src.numpy(), real.numpy()))
        return super()._update(d, src, real, phase, step)


def recorded_iteration(tiny_records, n_iter, batch):
    from conftest import TINY

    from mrgan_tf.modeling.augment import AugmentConfig
    from mrgan_tf.modeling.mrgan import make_optimizers
    cfg = MRGANConfig(mode="mrgan", **TINY, n_iter=n_iter,
                      augment=AugmentConfig(flip=False, crop_margin=0, max_rotation_deg=0))
    model = RecordingMRGAN(cfg)
    model.compile(make_optimizers(cfg))
    element = next(iter(data.training_dataset(tiny_records, "mrgan", batch, seed=0, n_iter=n_iter)))
    model.train_step(element)
    return model, decode(element, model.config.input_max).numpy()


def test_n_iter_steps_draw_fresh_batches_unpaired_steps_first(tiny_records):
    model, x = recorded_iteration(tiny_records, n_iter=2, batch=1)
    assert x.shape[0] == 2                                   # the pipeline delivered n_iter x batch examples
    assert [(phase, name) for phase, name, _, _ in model.trace] == \
        [("unpaired", "mr"), ("unpaired", "ct")] * 2 + [("paired", "mr"), ("paired", "ct")] * 2
    src = [s for _, _, s, _ in model.trace]
    for step in range(2):                                    # step i's CT, MR and pair are example i
        ex = x[step:step + 1]
        np.testing.assert_array_equal(src[2 * step], ex[..., 0:1])          # unpaired CT -> SynMR
        np.testing.assert_array_equal(src[2 * step + 1], ex[..., 1:2])      # unpaired MR -> SynCT
        np.testing.assert_array_equal(src[4 + 2 * step], ex[..., 2:3])      # paired CT -> SynMR
        np.testing.assert_array_equal(src[4 + 2 * step + 1], ex[..., 3:4])  # paired MR -> SynCT
    for a, b in ((0, 2), (4, 6)):
        assert not np.array_equal(src[a], src[b])            # the two steps saw different examples
    assert int(model.optimizers["syn_mr"].iterations.numpy()) == model.config.updates_per_iteration("syn_mr") == 4


def test_n_iter_one_iteration_uses_the_whole_batch_once(tiny_records):
    model, x = recorded_iteration(tiny_records, n_iter=1, batch=2)
    assert [(phase, name) for phase, name, _, _ in model.trace] == \
        [("unpaired", "mr"), ("unpaired", "ct"), ("paired", "mr"), ("paired", "ct")]
    np.testing.assert_array_equal(model.trace[0][2], x[..., 0:1])
    np.testing.assert_array_equal(model.trace[2][3], x[..., 3:4])


def test_n_iter_dataset_batches_and_resumes_by_iteration(tiny_records):
    first = [b.numpy() for b in data.training_dataset(tiny_records, "mrgan", 2, seed=0, n_iter=3).take(2)]
    assert first[0].shape[0] == 6
    flat = np.concatenate([b.numpy() for b in data.training_dataset(tiny_records, "mrgan", 6, seed=0).take(2)])
    np.testing.assert_array_equal(np.concatenate(first), flat)       # the same stream, cut per iteration
    resumed = next(iter(data.training_dataset(tiny_records, "mrgan", 2, seed=0, n_iter=3, skip_batches=1)))
    np.testing.assert_array_equal(resumed.numpy(), first[1])
    with pytest.raises(ValueError, match="n_iter must be at least 1"):
        data.training_dataset(tiny_records, "mrgan", 2, n_iter=0)
