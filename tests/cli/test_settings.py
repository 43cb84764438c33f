"""Tests of a train run's settings (cnn_im2col.cli.settings): an architecture's own defaults, and
flags over them."""

from cnn_im2col.cli.arguments import build_parser
from cnn_im2col.cli.settings import DEFAULTS, TRAIN_DEFAULTS, resolve_settings


def test_vgg_bn_trains_with_its_own_default_epochs():
    args = build_parser().parse_args(["train", "--model", "vgg-bn"])
    settings, _ = resolve_settings(args)
    assert (
        settings["epochs"] == TRAIN_DEFAULTS["vgg-bn"]["epochs"]
        and settings["model"] == "vgg-bn"
    )
    args = build_parser().parse_args(["train", "--model", "vgg-bn", "--epochs", "2"])
    assert resolve_settings(args)[0]["epochs"] == 2  # a flag beats the architecture's default
    assert (
        resolve_settings(build_parser().parse_args(["train"]))[0]["epochs"]
        == DEFAULTS["epochs"]
    )


def test_resnet20_brings_he_et_al_s_recipe_flips_included_and_no_flip_turns_them_off():
    def settings(*flags):
        return resolve_settings(build_parser().parse_args(["train", *flags]))[0]

    recipe = settings("--model", "resnet20")
    assert (recipe["epochs"], recipe["optimizer"], recipe["lr"], recipe["flip"]) == (
        20, "sgd", 0.1, True)
    assert settings("--model", "resnet20", "--no-flip")["flip"] is False
    assert settings("--model", "vgg-bn")["flip"] is None  # by the data: on for colour only
