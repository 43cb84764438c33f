"""Tests of ``main`` (cnn_im2col.cli): an error of the package is one line on stderr, exit code 2,
no traceback."""

from cli.cases import train_args
from cnn_im2col import cli


def test_package_errors_are_one_line_without_traceback(idx_dir, tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "absent.npz")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("cnn-im2col: error: ") and "absent.npz" in err and len(err.splitlines()) == 1
    )
    junk = tmp_path / "junk.npz"
    junk.write_text("nope")
    assert cli.main(["evaluate", str(junk), "--data-dir", str(idx_dir)]) == 2
    assert "not a cnn-im2col model file" in capsys.readouterr().err
    assert cli.main(train_args(idx_dir, tmp_path / "r", "--val-split", "500")) == 2
    assert (
        "--val-split 500 must be smaller than the number of training images (200)"
        in capsys.readouterr().err
    )
    (tmp_path / "a-file").write_text("")
    assert cli.main(train_args(tmp_path / "a-file", tmp_path / "r")) == 2
    assert "must be a directory" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing-here")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
