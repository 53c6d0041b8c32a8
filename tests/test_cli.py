"""The one CLI runner: user errors as one line and exit 1, bugs keep their traceback."""
import errno

import pytest

from mrgan_tf import cli
from mrgan_tf.errors import UserError
from mrgan_tf.io.volumes import VolumeError
from tfrecords_tools.reader import CorruptRecordError


@pytest.mark.parametrize("error, words", [
    (VolumeError("/d/p1/ct.nii.gz", "image is 2-D, expected 3-D"), "/d/p1/ct.nii.gz: image is 2-D"),
    (UserError("--ct_range: need lo < hi"), "--ct_range: need lo < hi"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/out.nii.gz"), "/full/out.nii.gz: No space left"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/file/run"), "/file/run: Not a directory"),
])
def test_user_errors_are_one_line_and_exit_1(capsys, error, words):
    with pytest.raises(SystemExit) as done:
        with cli.user_errors("tool"):
            raise error
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("tool: error: ") and words in err and "Traceback" not in err and err.count("\n") == 1


def test_corrupt_record_is_a_user_error(capsys):
    with pytest.raises(SystemExit):
        with cli.user_errors("train"):
            raise CorruptRecordError("/r/paired_train-00001-of-00004.tfrecord.gz", 17, "bad CRC")
    assert "paired_train-00001" in capsys.readouterr().err


def test_bugs_are_not_hidden():
    with pytest.raises(KeyError):
        with cli.user_errors("tool"):
            raise KeyError("a bug")


def test_field_flags_take_type_default_and_choices_from_the_dataclass():
    import dataclasses

    from absl import flags

    @dataclasses.dataclass(frozen=True)
    class Options:
        steps: int | None = None
        rate: float = 0.5
        fast: bool = True
        kind: str = "b"
        label: str = "x"
        sizes: tuple = (1, 2)

    table = {"steps": cli.Flag("Steps."), "rate": cli.Flag("Rate."), "fast": cli.Flag("Fast.", name="quick"),
             "kind": cli.Flag("Kind.", {"a": 1, "b": 2}), "label": cli.Flag("Label.")}
    fv = flags.FlagValues()
    cli.define_field_flags(fv, Options, table)
    fv(["tool", "--steps=3", "--noquick", "--kind=a"])
    assert Options(**cli.field_values(fv, table)) == Options(steps=3, fast=False, kind="a")
    assert fv["kind"].parser.enum_values == ["a", "b"] and fv["rate"].default == 0.5
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["tool", "--kind=c"])
    with pytest.raises(TypeError, match="Options.sizes"):
        cli.define_field_flags(flags.FlagValues(), Options, {"sizes": cli.Flag("Sizes.")})


def test_field_flags_for_typed_tuples_and_numeric_enums():
    import dataclasses

    from absl import flags

    @dataclasses.dataclass(frozen=True)
    class Options:
        pair: tuple[float, float] = (0.5, 99.5)
        window: tuple[float, float] | None = None
        bits: int = 8

    table = {"pair": cli.Flag("Pair."), "window": cli.Flag("Window."), "bits": cli.Flag("Bits.", ("8", "16"))}
    fv = flags.FlagValues()
    cli.define_field_flags(fv, Options, table)
    fv(["tool"])
    assert Options(**cli.field_values(fv, table, Options)) == Options()
    fv(["tool", "--pair=1,99", "--window=-1024, 3000", "--bits=16"])
    assert Options(**cli.field_values(fv, table, Options)) == Options((1.0, 99.0), (-1024.0, 3000.0), 16)
    fv(["tool", "--window=a,b"])
    with pytest.raises(cli.UserError, match="--window must be numbers, got a,b"):
        cli.field_values(fv, table, Options)


def test_client_and_synthesize_share_one_set_of_connection_flags():
    from absl import flags

    from mrgan_tf.inference import client, synthesize
    tools = {}
    for name, module in (("client", client), ("synthesize", synthesize)):
        fv = flags.FlagValues()
        module.define_flags(fv)
        fv(["tool", "--server=localhost:8500", "--retries=2", "--model_version=3"])
        tools[name] = client.connection_from_flags(fv)
    assert tools["client"] == tools["synthesize"] == client.ClientConfig("localhost:8500", version=3, retries=2)
    fv(["tool", "--retries=0"])
    with pytest.raises(client.ServingError, match="--retries must be at least 1, got 0"):
        client.connection_from_flags(fv)


# ---------------------------------------------------------------- how every tool's command line behaves
def _tool(*args, env=None):
    """A tool run as the user runs it, from a folder outside the checkout."""
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, **(env or {})})


def test_nested_flagfiles_resolve_beside_their_file_then_in_the_repo_configs(tmp_path, monkeypatch):
    from tfrecords_tools import console
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "base.cfg").write_text("# the base\n--steps=1\n\n--lr=0.1\n")
    (tmp_path / "exp" / "run.cfg").write_text("--flagfile=base.cfg\n  // a comment\n--steps=2\n"
                                              "--flagfile=configs/gpu_fast.cfg\n")
    monkeypatch.chdir(tmp_path / "exp")   # then anywhere else: the command line's own name is relative to here
    argv = console.expand_flagfiles(["train", "--steps=0", "--flagfile=run.cfg", "--lr=0.5"], [cli.CONFIGS])
    monkeypatch.chdir("/")
    assert console.expand_flagfiles(["train", f"--flagfile={tmp_path}/exp/run.cfg"], [cli.CONFIGS]) == ["train",
                                                                                                    *argv[2:-1]]
    gpu_fast = [ln for ln in (cli.CONFIGS / "gpu_fast.cfg").read_text().splitlines() if ln.startswith("--")]
    mrgan = [ln for ln in (cli.CONFIGS / "mrgan.cfg").read_text().splitlines() if ln.startswith("--")]
    assert argv == ["train", "--steps=0", "--steps=1", "--lr=0.1", "--steps=2", *mrgan, *gpu_fast[1:], "--lr=0.5"]
    demo = ["t", *(ln for ln in (cli.CONFIGS / "demo.cfg").read_text().splitlines() if ln.startswith("--"))]
    assert console.expand_flagfiles(["t", "--flagfile=configs/demo.cfg"], [cli.CONFIGS]) == demo
    assert console.expand_flagfiles(["t", "--flagfile", "demo.cfg"], [cli.CONFIGS]) == demo
    assert console.expand_flagfiles(["t", "--", "--flagfile=nowhere.cfg"]) == ["t", "--", "--flagfile=nowhere.cfg"]


def test_a_missing_flagfile_names_the_file_and_line_that_include_it(tmp_path, monkeypatch):
    from tfrecords_tools import console
    (tmp_path / "a.cfg").write_text("--steps=1\n# no flags here\n--flagfile=b.cfg\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(console.FlagfileError) as e:
        console.expand_flagfiles(["t", "--flagfile=a.cfg"], [cli.CONFIGS])
    assert str(e.value).startswith(f"a.cfg:3: --flagfile=b.cfg: no such file (looked in {tmp_path / 'b.cfg'}, "
                                   f"{cli.CONFIGS / 'b.cfg'}")
    (tmp_path / "b.cfg").write_text("--flagfile=a.cfg\n")
    with pytest.raises(console.FlagfileError, match="b.cfg:1: --flagfile=a.cfg: includes itself"):
        console.expand_flagfiles(["t", "--flagfile=a.cfg"])


@pytest.mark.parametrize("args, message", [
    (["mrgan_tf.make_records", "--root=/r", "--nosuch=1"], "make_records: error: Unknown command line flag 'nosuch'"),
    (["mrgan_tf.make_records", "--workers=many"], "make_records: error: flag --workers=many: invalid literal"),
    (["mrgan_tf.pacs", "--echo"], "pacs: error: --peer=AET@host:port is required"),
    (["mrgan_tf.pacs", "--peer=A@h:1", "stray"], "pacs: error: unexpected arguments: ['stray']"),
    (["mrgan_tf.pacs", "--flagfile=configs/nope.cfg"], "pacs: error: --flagfile=configs/nope.cfg: no such file"),
])
def test_usage_errors_are_two_lines_and_exit_2(args, message):
    done = _tool(*args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.endswith("\nTry '--help' for the flags.\n"), done.stderr
    assert done.stderr.count("\n") == 2 and not done.stdout


def test_help_says_what_the_tool_does_then_lists_its_flags():
    done = _tool("mrgan_tf.make_records", "--help")
    assert done.stdout.startswith(cli.help_text("make_records"))
    import subprocess
    import sys
    script = "from mrgan_tf.records.make_records import run; run()"   # a console script: __main__ has no text
    done = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith(cli.help_text("make_records"))
    assert "--root: Input folder" in done.stdout and "--[no]verbose:" in done.stdout and "--helpfull" in done.stdout
    full = _tool("mrgan_tf.make_records", "--helpfull").stdout
    assert "--root: Input folder" in full and "--flagfile:" in full and "absl.logging" in full


@pytest.mark.parametrize("tool", ["make_records", "train", "export", "synthesize", "pacs", "client", "evaluate",
                                  "demo_data", "demo"])
def test_every_tool_has_help_written_for_users(tool):
    """What it does, an example command line, the common flags; no developer notes (code names in ``)."""
    text = cli.help_text(tool)
    assert f"python -m mrgan_tf.{tool} --" in text and "Common flags:" in text and "``" not in text


def test_tensorflow_start_up_lines_are_held_back_at_the_level_asked_for():
    from tfrecords_tools import console
    banner = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
              "I0000 00:00:1796644254.313060    6402 port.cc:153] oneDNN custom operations are on.\n",
              "I0000 00:00:1796644254.3 6402 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n",
              "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow\n",
              "E0000 00:00:1796644254.4 6402 cuda_fft.cc:467] Unable to register cuFFT factory: Attempting to "
              "register factory for plugin cuFFT when one has already been registered\n"]
    news = ["W0000 00:00:1796644254.5 6402 something.cc:1] a warning\n",
            "E0000 00:00:1796644254.5 6402 something.cc:1] an error\n", "/x/y.py:3: UserWarning: careful\n"]
    assert [ln for ln in banner + news if console.shown(ln, 2)] == news[1:]
    assert [ln for ln in banner + news if console.shown(ln, 1)] == banner[4:] + news
    assert all(console.shown(ln, 0) for ln in banner + news)


def test_no_tensorflow_banner_on_a_normal_run(tmp_path):
    """inspect reads the records with TensorFlow; its banner (printed before TF_CPP_MIN_LOG_LEVEL is read)
    and absl's pre-init line do not reach the user, whose own level still decides."""
    import os
    import subprocess
    import sys

    from tfrecords_tools import schema, writer
    with writer.ShardedWriter(tmp_path, "s", {"n": schema.Int()}) as w:
        w.write({"n": 1})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "tfrecords_tools.inspect", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "s: 1 examples, groups n/a, 1 shards, OK\n"
    assert done.stderr == "", done.stderr
    assert _tool("tfrecords_tools.inspect", "--help", env={"TF_CPP_MIN_LOG_LEVEL": "0"}).stderr == ""
    shown = subprocess.run([sys.executable, "-c", "import mrgan_tf, tensorflow"], capture_output=True, text=True,
                           env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=120)
    assert "oneDNN" in shown.stderr or "cpu_feature_guard" in shown.stderr   # the user asked for them


def test_library_info_lines_need_verbose_our_own_and_warnings_always_show():
    import logging

    from tfrecords_tools import console

    def record(path, level=logging.INFO):
        return logging.LogRecord("absl", level, path, 1, "m", (), None)
    keep = console._OwnInfo([cli.PACKAGE])
    assert keep.filter(record(str(cli.PACKAGE / "training" / "train.py")))
    assert not keep.filter(record("/venv/site-packages/tensorflow/python/saved_model/signature_serialization.py"))
    assert keep.filter(record("/venv/site-packages/tensorflow/x.py", logging.WARNING))
    assert cli.library_logs(True) and cli.library_logs(2) and not cli.library_logs(False) and not cli.library_logs(1)
