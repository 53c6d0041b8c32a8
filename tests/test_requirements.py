"""The start-up check of optional packages: a run that will need one stops before it builds anything.

The missing package is simulated by hiding it from the import system (``sys.modules[name] = None``
makes every ``import name...`` fail as if it were not installed).
"""
import os
import subprocess
import sys

import pytest
from conftest import TINY, TINY_FLAGS

from mrgan_tf import requirements

INSTALL_SERVING = "pip install --no-deps 'tensorflow-serving-api==2.21.*'"


def hide(monkeypatch, package: str) -> None:
    """Make ``package`` and its submodules unimportable for the rest of the test."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def test_what_each_tool_needs_follows_its_options():
    assert requirements.needed("train", export=False) == [("tensorflow", None)]
    assert requirements.needed("train", export=True) == [("tensorflow", None), ("serving", "export")]
    assert ("serving", None) in requirements.needed("export")
    assert ("grpc", "server") in requirements.needed("client", server="localhost:8500")
    assert ("grpc", "server") not in requirements.needed("synthesize", server="http://localhost:8501")   # REST
    assert ("pacs", "send") in requirements.needed("synthesize", send="ORTHANC@pacs:4242")
    assert requirements.needed("synthesize") == [("tensorflow", None)]
    assert set(requirements.NEEDS) >= {"make_records", "train", "export", "synthesize", "client", "pacs", "evaluate"}


def test_a_missing_package_is_one_line_with_the_pip_command(monkeypatch):
    requirements.require("train", export=True)   # installed here: nothing raised
    hide(monkeypatch, "tensorflow_serving")
    requirements.require("train", export=False)  # not needed without --export
    with pytest.raises(requirements.MissingPackage) as e:
        requirements.require("train", export=True)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--export needs tensorflow-serving-api")
    assert INSTALL_SERVING in message and "--noexport" in message
    with pytest.raises(ImportError):             # also an ImportError for code that catches those
        requirements.require("client", server="localhost:8500")
    requirements.require("client", server="http://localhost:8501")
    assert "tensorflow_serving" in requirements.import_problem("serving")


def test_the_report_gives_each_missing_piece_its_command(monkeypatch, capsys):
    # no real imports here: the optional pieces (torch among them) stay out of the test process
    monkeypatch.setattr(requirements, "import_problem",
                        lambda piece: None if piece == "tensorflow" else f"ModuleNotFoundError: No module named {piece!r}")
    monkeypatch.setattr(requirements, "installed_tensorflow_wheels", lambda: ["tensorflow-cpu 2.21.0"])
    assert requirements.main() == 0
    report = capsys.readouterr().out
    assert report.startswith("tensorflow ok")
    assert "serving    missing" in report and INSTALL_SERVING in report
    assert "pip install --no-deps 'pyradplan==0.5.0'" in report
    monkeypatch.setattr(requirements, "installed_tensorflow_wheels",
                        lambda: ["tensorflow 2.21.0", "tensorflow-cpu 2.21.0"])
    assert requirements.main() == 1
    assert "overwrite each other" in capsys.readouterr().out


def test_train_refuses_before_building_anything(monkeypatch, tmp_path):
    from mrgan_tf.modeling.mrgan import MRGANConfig
    from mrgan_tf.training import distribute, train

    class Built(Exception):
        pass

    def make_strategy(*args, **kwargs):
        raise Built

    monkeypatch.setattr(distribute, "make_strategy", make_strategy)
    hide(monkeypatch, "tensorflow_serving")
    out = tmp_path / "run"
    with pytest.raises(requirements.MissingPackage, match="tensorflow-serving-api"):
        train.train(str(tmp_path / "records"), str(out), MRGANConfig(**TINY), train.TrainConfig(steps=1))
    assert not out.exists()
    with pytest.raises(Built):   # without --export the run goes on to build its strategy
        train.train(str(tmp_path / "records"), str(out), MRGANConfig(**TINY),
                    train.TrainConfig(steps=1, export=False))


def test_train_cli_names_the_missing_package_and_writes_nothing(tiny_records, tmp_path):
    out = tmp_path / "run"
    code = ("import sys; sys.modules['tensorflow_serving'] = None; "
            "from mrgan_tf.training.train import run; run()")
    done = subprocess.run([sys.executable, "-c", code, f"--records={tiny_records.root}", f"--out={out}",
                           "--steps=1", *TINY_FLAGS], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: --export needs tensorflow-serving-api"), done.stderr
    assert INSTALL_SERVING in last
    assert not out.exists()
