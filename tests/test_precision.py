"""--precision: which precisions exist, which CPUs may run bf16, and what the flag refuses."""
from __future__ import annotations

import pytest

from mrgan_tf.inference import precision


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
        precision.use_precision("bfloat16", cpuinfo(tmp_path, "avx512f"))
    with pytest.raises(precision.PrecisionError, match="must be one of float32, bfloat16, got 'float16'"):
        precision.InferenceConfig("float16")
    assert precision.current_precision() == "float32"   # nothing was switched


def test_a_server_is_not_asked_for_a_precision(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "mrgan_tf.synthesize", "--server=localhost:1", "--precision=bfloat16",
                          f"--ct={tmp_path / 'ct.nii.gz'}", f"--out={tmp_path / 'out.nii.gz'}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "--precision=bfloat16 is for --model" in run.stderr, run.stderr[-2000:]
