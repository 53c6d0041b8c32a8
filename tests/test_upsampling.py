"""The generator's upsampling option: resize + conv beside the paper's transposed conv, old runs unchanged."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, TINY_FLAGS, train_configs
from mrgan_tf.evaluation import checkerboard
from mrgan_tf.modeling import networks
from mrgan_tf.modeling.mrgan import MRGAN, MRGANConfig


def test_every_upsampling_has_the_same_weight_count():
    counts = {m: networks.build_generator(ngf=8, n_blocks=2, image_size=32, upsample=m).count_params()
              for m in networks.UPSAMPLING}
    assert len(set(counts.values())) == 1, counts


def test_only_the_transposed_conv_turns_a_constant_image_into_a_checkerboard():
    """Untrained, on a flat input: the transposed conv's uneven kernel overlap shows; a resize's does not.

    The input is flat but for a noisy 4-pixel rim: a wholly flat image is flattened to exactly 0 by the first
    instance norm, and what followed depended on round-off. The output's centre sees only the flat part (the
    generator's receptive field reaches 26 pixels with a resize), and the rim gives instance norm something to scale.
    """
    x = np.full((1, 128, 128, 1), 0.3, np.float32)
    rim = np.ones((128, 128), bool)
    rim[4:-4, 4:-4] = False
    x[0, rim, 0] += np.random.default_rng(0).normal(0, 0.2, rim.sum()).astype(np.float32)
    inner = np.zeros((128, 128), bool)
    inner[32:-32, 32:-32] = True      # beyond the reach of the rim and of the strided convs' zero padding
    amp = {m: checkerboard.amplitude(networks.build_generator(4, 1, 128, upsample=m)(x).numpy()[0, ..., 0], inner)
           for m in networks.UPSAMPLING}
    assert amp["transpose"] > 1e-3
    assert amp["nearest"] < 1e-4 * amp["transpose"] and amp["bilinear"] < 1e-4 * amp["transpose"], amp


def test_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="cubic"):
        MRGANConfig(upsample="cubic")
    with pytest.raises(ValueError, match="cubic"):
        networks.build_generator(4, 1, 32, upsample="cubic")


def test_flag_sets_the_model_config(tiny_records):
    model, _ = train_configs([f"--records={tiny_records.root}", "--out=unused", *TINY_FLAGS, "--upsample=bilinear"])
    assert model.upsample == "bilinear"
    default, _ = train_configs([f"--records={tiny_records.root}", "--out=unused", *TINY_FLAGS])
    assert default.upsample == "transpose"


def test_a_run_json_from_before_the_option_restores_its_transposed_conv_checkpoint(tmp_path):
    """run.json written before the field existed builds the transposed conv, and its checkpoint restores;
    the same checkpoint refuses to restore into a resize-conv model (its up-conv kernels are transposed)."""
    from mrgan_tf.training import checkpoints
    old = MRGAN(MRGANConfig(**TINY, seed=3))
    prefix = checkpoints.manager_for(old, str(tmp_path / "run")).save()
    doc = checkpoints.config_to_dict(old.config)
    del doc["upsample"]
    fresh = MRGAN(checkpoints.config_from_dict(doc))
    assert fresh.config.upsample == "transpose"
    checkpoints.checkpoint_for(fresh).restore(prefix).assert_existing_objects_matched()
    for a, b in zip(old.syn_ct.weights, fresh.syn_ct.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    resized = MRGAN(MRGANConfig(**TINY, upsample="nearest"))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        checkpoints.checkpoint_for(resized).restore(prefix).assert_existing_objects_matched()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_a_resize_conv_model_trains_one_step(tiny_model_factory, mode):
    model = tiny_model_factory("mrgan", upsample=mode)
    before = [w.numpy().copy() for w in model.syn_ct.trainable_weights]
    batch = tf.constant(np.random.default_rng(0).integers(0, 255, (1, 32, 32, 4)), tf.uint8)
    logs = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in logs.values()), logs
    up = [i for i, w in enumerate(model.syn_ct.trainable_weights) if w.path.startswith("up0/")]
    assert up and all(not np.array_equal(before[i], model.syn_ct.trainable_weights[i].numpy()) for i in up)


def test_the_runner_keeps_the_arms_it_does_not_rerun(tmp_path):
    """Adding one arm must not drop the arms measured before from upsampling.{md,json}."""
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "experiments"))
    import upsampling
    row = {"x": 1.0}
    old = {"arms": {a: {"config": "configs/demo.cfg", "train_flags": [], "steps": 600} for a in ("old", "new")},
           "commands": {"old/seed0": "train old", "new/seed0": "train new"},
           "timings": {a: {"0": {"seconds": 1.0}} for a in ("old", "new")},
           "per_seed": {a: {"0": row} for a in ("old", "new")},
           "per_patient": {a: {"0": {"p": row}} for a in ("old", "new")},
           "code": {"commit": "abc"}, "cpu": "cpu"}
    (tmp_path / "upsampling.json").write_text(json.dumps(old))
    kept = upsampling.carried_over(str(tmp_path / "upsampling.json"), ["new"])
    assert list(kept["arms"]) == ["old"] and kept["commands"] == {"old/seed0": "train old"}
    assert kept["arms"]["old"]["records"] == "demo" and kept["arms"]["old"]["code"] == {"commit": "abc"}
    assert kept["per_seed"] == {"old": {0: row}} and kept["timings"] == {"old": {0: {"seconds": 1.0}}}
    assert upsampling.carried_over(str(tmp_path / "missing.json"), ["new"])["arms"] == {}
