"""Tests of the command line (cnn_im2col.cli.arguments): bad flags are argparse's errors."""

import pytest

from cnn_im2col import cli


def test_bad_flags_are_argparse_errors(capsys):
    for argv in (
        ["train", "--epochs", "0"],
        ["train", "--lr", "-1"],
        ["train", "--optimizer", "rmsprop"],
        ["train", "--batch-size", "x"],
        ["frobnicate"],
        [],
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        assert "usage:" in capsys.readouterr().err
