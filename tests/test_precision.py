"""--precision: which precisions exist, which CPUs may run bf16, and what the flag refuses."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_export
from mrgan_tf.inference import precision, predictors


def cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_bf16_flags_are_read_from_cpuinfo(tmp_path):
    assert precision.cpu_bf16_flags(cpuinfo(tmp_path, "avx512f avx512_bf16 amx_tile amx_bf16")) == (
        "amx_bf16", "avx512_bf16")
    assert precision.cpu_bf16_flags(cpuinfo(tmp_path, "avx512f")) == ()
    assert precision.cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_bfloat16_is_refused_on_a_cpu_without_it_and_unknown_precisions_everywhere(tmp_path):
    with pytest.raises(precision.PrecisionError, match="needs a CPU with native bf16"):
        precision.check_precision("bfloat16", cpuinfo(tmp_path, "avx512f"))
    with pytest.raises(precision.PrecisionError, match="must be one of float32, bfloat16, got 'float16'"):
        precision.InferenceConfig("float16")


def test_a_server_is_not_asked_for_a_precision(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "mrgan_tf.synthesize", "--server=localhost:1", "--precision=bfloat16",
                          f"--ct={tmp_path / 'ct.nii.gz'}", f"--out={tmp_path / 'out.nii.gz'}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "--precision=bfloat16 is for --model" in run.stderr, run.stderr[-2000:]


@pytest.mark.skipif(not precision.cpu_bf16_flags(), reason="this CPU has no native bf16")
def test_bf16_and_float32_predictors_of_one_process_keep_their_own_arithmetic(tiny_records, tmp_path_factory):
    import tensorflow as tf

    export = tiny_export(tmp_path_factory, tiny_records)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    fp32 = predictors.load_predictor(export, "ct2mr")
    before = fp32.fn(x)
    bf16 = predictors.load_predictor(export, "ct2mr", "bfloat16")
    low = bf16.fn(x)
    assert not tf.config.optimizer.get_experimental_options().get(precision.REWRITE)   # off again after the call
    np.testing.assert_array_equal(fp32.fn(x), before)
    assert 0 < np.abs(low - before).max() < 0.1
    np.testing.assert_array_equal(bf16.fn(x), low)
    assert bf16.model_record()["precision"] == "bfloat16" and fp32.model_record()["precision"] == "float32"
