"""The shipped flagfiles: baselines and ablations nest mrgan.cfg and differ from it only where they say."""
from pathlib import Path

import pytest
from absl import flags

REPO = Path(__file__).resolve().parents[1]


def flag_values(monkeypatch, flagfile: str) -> dict:
    from mrgan_tf.training import train
    monkeypatch.chdir(REPO)     # nested --flagfile paths are relative to the checkout
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["train", f"--flagfile={flagfile}"])
    return {name: fv[name].value for name in fv if fv[name].present or name in ("mode", "out")}


@pytest.mark.parametrize("name, differs", [
    ("paired", {"mode": "paired", "out": "runs/paired"}),
    ("unpaired", {"mode": "unpaired", "out": "runs/unpaired"}),
    ("authors_code", {"out": "runs/mrgan_authors", "real_label": 0.9, "paired_real_label": 1.0,
                      "generator_target": "real_label", "pool_size": 50, "separate_phase_optimizers": True,
                      "paired_cycle": False, "paired_generator_repeats": 2, "first_conv_norm": False,
                      "unpaired_cycle": "both"}),
])
def test_configs_nest_the_paper_settings(monkeypatch, name, differs):
    base = flag_values(monkeypatch, "configs/mrgan.cfg")
    cfg = flag_values(monkeypatch, f"configs/{name}.cfg")
    assert {k: v for k, v in cfg.items() if base.get(k) != v} == differs
    assert cfg["steps"] == 300000 and cfg["ngf"] == 64 and cfg["n_blocks"] == 9


def test_authors_config_yields_the_authors_model(monkeypatch, tiny_records):
    """Every option the authors' code differs in reaches MRGANConfig; the rest is the paper's."""
    import dataclasses

    from mrgan_tf.modeling.mrgan import MRGANConfig
    from mrgan_tf.training import train
    monkeypatch.chdir(REPO)
    parsed = {}
    for name in ("authors_code", "mrgan"):
        fv = flags.FlagValues()
        train.define_flags(fv)
        fv(["train", f"--flagfile=configs/{name}.cfg"])
        parsed[name] = train.model_config_from_flags(fv, tiny_records), fv.separate_phase_optimizers
    (cfg, eight_optimizers), (paper, _) = parsed["authors_code"], parsed["mrgan"]
    assert eight_optimizers
    assert dataclasses.replace(paper, real_label=0.9, paired_real_label=1.0, generator_target="real_label",
                               pool_size=50, paired_cycle=False, paired_generator_repeats=2,
                               first_conv_norm=False, unpaired_cycle="both") == cfg
    assert (cfg.real_label_for("unpaired"), cfg.real_label_for("paired")) == (0.9, 1.0)
    assert (cfg.paired_repeats, cfg.mode_spec.paired_cycle) == (1, False)
    assert paper == dataclasses.replace(MRGANConfig(), image_size=paper.image_size, input_max=paper.input_max)
    assert (cfg.updates_per_iteration("dis_mr", "paired"), cfg.updates_per_iteration("syn_mr", "paired")) == (1, 2)


def test_synthetic_ct_config(monkeypatch):
    cfg = flag_values(monkeypatch, "configs/synthrad_sct.cfg")
    assert (cfg["val_select"], cfg["export_checkpoint"], cfg["mode"]) == ("mr2ct", "best", "mrgan")
    assert cfg["val_every"] % cfg["log_every"] == 0
    from mrgan_tf.records import make_records
    fv = flags.FlagValues()
    make_records.define_flags(fv)
    monkeypatch.chdir(REPO)
    fv(["make_records", "--flagfile=configs/synthrad_sct_records.cfg"])
    pre = make_records.config_from_flags(fv)
    assert pre.ct_hu_range == (-1024.0, 3000.0) and pre.bits == 16 and fv.val_patients == "2"


TRAIN_FLAGFILES = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("configs/**/*.cfg"),
                                                           *REPO.glob("bench/experiments/configs/*.cfg")]
                         if p.name != "synthrad_sct_records.cfg")   # make_records' flagfile, read above


@pytest.mark.parametrize("flagfile", TRAIN_FLAGFILES)
def test_every_train_flagfile_parses_into_a_train_config(monkeypatch, flagfile):
    from mrgan_tf.training import train
    monkeypatch.chdir(REPO)
    fv = flags.FlagValues()
    train.define_flags(fv)
    fv(["train", f"--flagfile={flagfile}"])
    config = train.train_config_from_flags(fv)
    assert config.total_steps > 0 and fv["mode"].value in ("mrgan", "paired", "unpaired")


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("loss", ["nll", "lsgan"])
def test_ablation_cells_differ_in_discriminator_and_paired_loss_only(monkeypatch, k, loss):
    """Table IV cells are the paper's Eq. 2 with another discriminator; Table III's make the paired term LSGAN."""
    base = flag_values(monkeypatch, "configs/mrgan.cfg")
    cfg = flag_values(monkeypatch, f"configs/ablations/D{k}_{loss}.cfg")
    expected = {"out": f"runs/ablation_D{k}_{loss}", "discriminator": f"D{k}", "adversarial":
                "lsgan" if loss == "lsgan" else "paper"}
    differs = {n: v for n, v in cfg.items() if base.get(n) != v}
    assert differs == {n: v for n, v in expected.items() if base.get(n) != v}
    assert {n: cfg[n] for n in expected} == expected


@pytest.mark.parametrize("flagfile", TRAIN_FLAGFILES + ["configs/synthrad_sct_records.cfg"])
def test_every_flagfile_reads_the_same_from_any_folder(monkeypatch, tmp_path, flagfile):
    """The tools expand --flagfile themselves (nested names beside their file, then configs/): from another
    folder, by absolute path or by its configs/ name, a config gives what absl read from the checkout."""
    from mrgan_tf import cli
    from mrgan_tf.records import make_records
    from mrgan_tf.training import train
    from tfrecords_tools import console
    tool = make_records if flagfile.endswith("_records.cfg") else train

    def parsed(argv):
        fv = flags.FlagValues()
        tool.define_flags(fv)
        fv(argv)
        return {name: fv[name].value for name in fv}
    monkeypatch.chdir(REPO)
    expected = parsed(["tool", f"--flagfile={flagfile}"])
    monkeypatch.chdir(tmp_path)
    names = [str(REPO / flagfile)] + ([flagfile] if flagfile.startswith("configs/") else [])
    for name in names:
        assert parsed(console.expand_flagfiles(["tool", f"--flagfile={name}"], [cli.CONFIGS])) == expected


def test_the_papers_configs_keep_the_transposed_conv(monkeypatch):
    for name in ("mrgan", "paired", "unpaired", "authors_code", "synthrad_sct", "demo"):
        assert flag_values(monkeypatch, f"configs/{name}.cfg").get("upsample", "transpose") == "transpose", name


def test_demo_sct_config_is_the_demo_config_with_what_measured_better(monkeypatch):
    base = flag_values(monkeypatch, "configs/demo.cfg")
    cfg = flag_values(monkeypatch, "configs/demo_sct.cfg")
    assert {k: v for k, v in cfg.items() if base.get(k) != v} == {"out": "runs/demo/sct", "upsample": "bilinear",
                                                                   "lr": 1e-3}
    assert cfg["steps"] == base["steps"]        # same iterations: the stage's time stays the demo's


def test_the_upsampling_runner_trains_each_arm_for_its_flagfiles_iterations(monkeypatch):
    """The runner passes --steps itself: it must be what train reads from the flagfile and those it nests."""
    import sys
    sys.path.insert(0, str(REPO / "bench" / "experiments"))
    import upsampling
    for arm in upsampling.ARMS.values():
        assert upsampling.flagfile_steps(str(REPO / arm.config)) == flag_values(monkeypatch, arm.config)["steps"]
        assert arm.records in upsampling.RECORDS
