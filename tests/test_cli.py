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
