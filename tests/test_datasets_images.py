"""Tests for cnn_im2col.datasets.images (and cache.py): decoding PNG/JPEG/BMP/WebP written here by
Pillow, the channel and size rules, image folders in both layouts, every bad input, and the cache
of decoded images (a second load decodes nothing; a touched file decodes again; the data folder
is never written)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from datasets_helpers import make_image_folder, pattern_image, save_image, snapshot
from PIL import Image

from cnn_im2col.datasets import images, load_images, open_image_folder
from cnn_im2col.datasets.images import decode_image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded images go to a cache inside tmp_path, never the user's."""
    monkeypatch.setenv("CNN_IM2COL_CACHE", str(tmp_path / "user-cache"))


def decoded_cache(tmp_path):
    folder = tmp_path / "user-cache" / "decoded"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- one image ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".webp", ".PNG"])
def test_lossless_formats_decode_exactly(tmp_path, suffix):
    pixels = pattern_image((9, 13), color=True)
    path = save_image(tmp_path / f"x{suffix}", pixels)
    back = decode_image(path)
    assert back.dtype == np.uint8 and back.shape == (9, 13, 3)
    np.testing.assert_array_equal(back, pixels)


def test_jpeg_decodes_close_to_the_original(tmp_path):
    pixels = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    back = decode_image(save_image(tmp_path / "x.jpg", pixels, quality=95))
    assert back.shape == (16, 16, 3) and np.abs(back.astype(int) - pixels).max() <= 3


def test_grayscale_stays_one_channel_and_can_be_forced_either_way(tmp_path):
    gray = pattern_image((6, 7), color=False)
    path = save_image(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(decode_image(path), gray)
    rgb = decode_image(path, channels=3)
    assert rgb.shape == (6, 7, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))
    color = save_image(tmp_path / "c.png", pattern_image((6, 7)))
    assert decode_image(color, channels=1).shape == (6, 7)


def test_alpha_palette_and_16_bit_images(tmp_path):
    rgba = np.dstack([pattern_image((5, 5)), np.full((5, 5), 7, np.uint8)])
    assert decode_image(save_image(tmp_path / "a.png", rgba)).shape == (5, 5, 3)  # alpha dropped
    palette = Image.fromarray(pattern_image((5, 5))).convert("P")
    palette.save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png").shape == (5, 5, 3)
    wide = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    Image.fromarray(wide).save(tmp_path / "w.png")
    back = decode_image(tmp_path / "w.png")
    assert back.shape == (4, 5) and back.max() == round(57000 / 257) and back.min() == 0


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(pattern_image((4, 10)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert decode_image(tmp_path / "o.jpg").shape == (10, 4, 3)


def test_resize_only_when_asked(tmp_path):
    path = save_image(tmp_path / "x.png", pattern_image((8, 10)))
    assert decode_image(path).shape == (8, 10, 3)
    assert decode_image(path, image_size=(4, 6)).shape == (4, 6, 3)
    with pytest.raises(TypeError, match="image_size"):
        decode_image(path, image_size=4)
    with pytest.raises(ValueError, match="channels"):
        decode_image(path, channels=2)


def test_truncated_and_corrupt_images_are_refused_by_name(tmp_path):
    good = save_image(tmp_path / "good.png", pattern_image((40, 40)))
    data = good.read_bytes()
    cases = {
        "truncated.png": data[: len(data) // 2],
        "flipped.png": data[:60] + bytes(b ^ 0x5A for b in data[60:200]) + data[200:],
        "garbage.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 4,
        "text.png": b"hello, I am not a picture\n",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match="truncated or corrupt|cannot be read as a PNG, "
                                             "JPEG, BMP or WebP image") as info:
            decode_image(tmp_path / name)
        assert str(tmp_path / name) in str(info.value), name
        assert len(str(info.value).splitlines()) == 1


def test_other_formats_are_not_decoded_even_under_an_image_name(tmp_path):
    Image.fromarray(pattern_image((5, 5))).save(tmp_path / "really-a-gif.png", format="GIF")
    with pytest.raises(ValueError, match="really-a-gif.png: cannot be read as a PNG, JPEG, BMP "
                                         "or WebP"):
        decode_image(tmp_path / "really-a-gif.png")


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    path = save_image(tmp_path / "big.png", pattern_image((11, 11)))
    with pytest.raises(ValueError, match=r"big\.png: 11x11 = 121 pixels exceeds the limit of 100 "
                                         r"pixels .*decompression bomb") as info:
        decode_image(path)
    assert type(info.value) is ValueError
    assert decode_image(save_image(tmp_path / "ok.png", pattern_image((10, 10)))).shape[0] == 10


@pytest.mark.parametrize("side", [8, 11])  # Pillow warns above its limit, raises above twice it
def test_pillows_decompression_bomb_warning_and_error_become_errors(tmp_path, monkeypatch, side):
    path = save_image(tmp_path / "bomb.png", pattern_image((side, side)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes
        with pytest.raises(ValueError, match=r"bomb\.png: refused as a possible decompression "
                                             r"bomb"):
            decode_image(path)


def test_load_images_for_prediction(tmp_path):
    a = save_image(tmp_path / "a.png", pattern_image((6, 6), color=False))
    b = save_image(tmp_path / "b.jpg", pattern_image((9, 9)))
    x = load_images([a, b], image_size=(6, 6), channels=3)
    assert x.shape == (2, 3, 6, 6) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match=r"b\.jpg: image is 9x9 \(height x width\) but .*a\.png "
                                         r"is 6x6"):
        load_images([a, b])


# --- folders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp"])
def test_a_class_tree_gets_a_stratified_seeded_test_split(tmp_path, suffix):
    paths = make_image_folder(tmp_path / "pets", classes=("cat", "dog", "eel"), per_class=10,
                              suffix=suffix)
    data = open_image_folder(tmp_path / "pets")
    assert data.kind == "image-folder" and data.classes == ("cat", "dog", "eel")
    assert data.x_train.shape == (24, 3, 8, 10) and data.x_test.shape == (6, 3, 8, 10)
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]  # 0.2 of each class
    assert np.bincount(data.y_train).tolist() == [8, 8, 8]
    again = open_image_folder(tmp_path / "pets", use_cache=False)
    np.testing.assert_array_equal(again.x_test, data.x_test)  # same seed, same split
    other = open_image_folder(tmp_path / "pets", seed=1, test_fraction=0.3)
    assert np.bincount(other.y_test).tolist() == [3, 3, 3]
    assert not np.array_equal(other.x_test[:2], data.x_test[:2])
    if suffix != ".jpg":  # lossless: the pixels are the files'
        first = np.asarray(Image.open(paths["cat"][0]))
        all_cats = np.concatenate([data.x_train[data.y_train == 0], data.x_test[data.y_test == 0]])
        assert any(np.array_equal(np.rint(img * 255).astype(np.uint8).transpose(1, 2, 0), first)
                   for img in all_cats)


def test_train_and_test_folders_are_used_as_they_are(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=4)
    make_image_folder(tmp_path / "d" / "test", per_class=2)
    data = open_image_folder(tmp_path / "d")
    assert sorted(data.y_train.tolist()) == [0] * 4 + [1] * 4
    assert data.y_test.tolist() == [0, 0, 1, 1]
    assert "train/ and test/" in data.details


def test_the_training_images_come_shuffled_by_the_seed_so_a_tail_mixes_the_classes(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=8)
    make_image_folder(tmp_path / "d" / "test", per_class=2)
    a = open_image_folder(tmp_path / "d", seed=0)
    b = open_image_folder(tmp_path / "d", seed=0)
    c = open_image_folder(tmp_path / "d", seed=1)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.y_train.tolist() != c.y_train.tolist()
    assert len(set(a.y_train[-4:].tolist())) == 2  # the last quarter holds both classes
    # the same images, each with its own label
    key = {img.tobytes(): label for img, label in zip(a.x_train, a.y_train)}
    assert all(key[img.tobytes()] == label for img, label in zip(c.x_train, c.y_train))


def test_all_grayscale_gives_one_channel_and_a_mix_gives_rgb(tmp_path):
    make_image_folder(tmp_path / "g", per_class=3, color=False)
    assert open_image_folder(tmp_path / "g").image_shape == (1, 8, 10)
    save_image(tmp_path / "g" / "cat" / "colour.png", pattern_image((8, 10)))
    mixed = open_image_folder(tmp_path / "g")
    assert mixed.image_shape == (3, 8, 10)
    gray = mixed.x_train[mixed.y_train == 1][0]  # a dog: grayscale, repeated into R = G = B
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])
    assert open_image_folder(tmp_path / "g", channels=1).image_shape == (1, 8, 10)


def test_images_of_different_sizes_need_image_size(tmp_path):
    make_image_folder(tmp_path / "d", per_class=3)
    odd = save_image(tmp_path / "d" / "dog" / "zz-odd.png", pattern_image((12, 5)))
    with pytest.raises(ValueError, match=r"zz-odd\.png: image is 12x5 \(height x width\) but "
                                         r".*cat/000\.png is 8x10; .*image_size=\(H, W\)") as info:
        open_image_folder(tmp_path / "d")
    assert str(odd) in str(info.value)
    data = open_image_folder(tmp_path / "d", image_size=(16, 16))
    assert data.image_shape == (3, 16, 16) and "resized to 16x16" in data.describe()


def test_an_empty_class_folder_is_refused(tmp_path):
    make_image_folder(tmp_path / "d")
    (tmp_path / "d" / "emu").mkdir()
    (tmp_path / "d" / "emu" / "notes.txt").write_text("nothing yet")
    with pytest.raises(ValueError, match=r"emu: empty class folder: it holds no PNG, JPEG, BMP "
                                         r"or WebP images \(1 other entries skipped\)"):
        open_image_folder(tmp_path / "d")


def test_train_and_test_class_sets_must_agree(tmp_path):
    make_image_folder(tmp_path / "d" / "train", classes=("cat", "dog", "emu"))
    make_image_folder(tmp_path / "d" / "test", classes=("cat", "dog", "fox"))
    with pytest.raises(ValueError, match=r"class folders of train/ and test/ differ \(only in "
                                         r"train/: emu; only in test/: fox\)"):
        open_image_folder(tmp_path / "d")


def test_non_image_files_are_skipped_and_counted(tmp_path):
    make_image_folder(tmp_path / "d", per_class=5)
    (tmp_path / "d" / "cat" / "notes.txt").write_text("not a picture")
    Image.fromarray(pattern_image((8, 10))).save(tmp_path / "d" / "dog" / "anim.gif")
    (tmp_path / "d" / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored, not counted
    with pytest.warns(UserWarning, match=r"skipped 2 entries that are not PNG, JPEG, BMP or WebP "
                                         r"files \(by extension\), e.g. .*notes\.txt"):
        data = open_image_folder(tmp_path / "d")
    assert data.skipped == 2 and "2 non-image files skipped" in data.describe()
    assert len(data.y_train) + len(data.y_test) == 10


def test_a_corrupt_image_in_a_folder_names_the_file(tmp_path):
    make_image_folder(tmp_path / "d")
    (tmp_path / "d" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    with pytest.raises(ValueError, match=r"dog/broken\.png: "):
        open_image_folder(tmp_path / "d")


@pytest.mark.parametrize("kwargs, error", [
    ({"test_fraction": 0}, ValueError), ({"test_fraction": 1.0}, ValueError),
    ({"test_fraction": True}, ValueError), ({"seed": 1.5}, TypeError),
    ({"channels": 4}, ValueError), ({"image_size": (0, 3)}, ValueError),
])
def test_bad_options(tmp_path, kwargs, error):
    make_image_folder(tmp_path / "d")
    with pytest.raises(error):
        open_image_folder(tmp_path / "d", **kwargs)


def test_too_few_images_for_a_test_split(tmp_path):
    make_image_folder(tmp_path / "d", per_class=1)
    with pytest.raises(ValueError, match="too few images to hold out a test split"):
        open_image_folder(tmp_path / "d")


# --- the cache of decoded images ---------------------------------------------------------------


def test_the_second_load_decodes_nothing_and_the_data_folder_is_untouched(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "d", per_class=4)
    before = snapshot(tmp_path / "d")
    first = open_image_folder(tmp_path / "d")
    assert len(decoded_cache(tmp_path)) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    second = open_image_folder(tmp_path / "d")
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert snapshot(tmp_path / "d") == before  # names, sizes and mtimes: nothing written


def test_touching_a_file_decodes_again(tmp_path, monkeypatch):
    paths = make_image_folder(tmp_path / "d", per_class=4)
    open_image_folder(tmp_path / "d")
    calls = []
    original = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a: calls.append(a) or original(*a))
    stat = paths["dog"][1].stat()
    os.utime(paths["dog"][1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    open_image_folder(tmp_path / "d")
    assert len(calls) == 8 and len(decoded_cache(tmp_path)) == 2
    calls.clear()
    open_image_folder(tmp_path / "d", image_size=(4, 4))  # another setting: another entry
    assert len(calls) == 8 and len(decoded_cache(tmp_path)) == 3


def test_a_broken_cache_entry_is_decoded_again(tmp_path):
    make_image_folder(tmp_path / "d", per_class=3)
    first = open_image_folder(tmp_path / "d")
    entry = tmp_path / "user-cache" / "decoded" / decoded_cache(tmp_path)[0]
    entry.write_bytes(b"PK\x03\x04 not really")
    np.testing.assert_array_equal(open_image_folder(tmp_path / "d").x_train, first.x_train)
    with np.load(entry, allow_pickle=False) as npz:
        assert npz["images"].shape == (6, 3, 8, 10)


def test_cache_dir_and_no_cache(tmp_path):
    make_image_folder(tmp_path / "d", per_class=3)
    open_image_folder(tmp_path / "d", cache_dir=tmp_path / "run")
    assert len(list((tmp_path / "run").glob("*.npz"))) == 1 and decoded_cache(tmp_path) == []
    open_image_folder(tmp_path / "d", use_cache=False)
    assert decoded_cache(tmp_path) == []
    with pytest.raises(ValueError, match="inside the data folder"):
        open_image_folder(tmp_path / "d", cache_dir=tmp_path / "d" / "cache")
    assert not (tmp_path / "d" / "cache").exists()


def test_an_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    make_image_folder(tmp_path / "d", per_class=3)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache the decoded images"):
        data = open_image_folder(tmp_path / "d", cache_dir=blocker / "decoded")
    assert data.x_train.shape[0] == 4
