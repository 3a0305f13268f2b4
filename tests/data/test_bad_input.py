"""Bad input through the CLI: one line naming the problem and the fix, exit 2, never a traceback."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from fastgan.cli import main


def user_error(capsys, argv, *needles) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("fastgan: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def prepare(source, root, *extra):
    return ["data", "prepare", source, "--root", root, "--resolution", 16, "--out", "out", "--quiet", *extra]


@pytest.mark.parametrize("source,hint", [
    ("cifar10", "fastgan data download cifar10"), ("emnist-letters", "fastgan data download emnist-letters"),
    ("celeba", "mmlab.ie.cuhk.edu.hk"), ("lsun-church", "github.com/fyu/lsun"), ("imagenet32", "image-net.org"),
    ("folder", "folder of images"), ("prepared", "fastgan data prepare")])
def test_missing_root(capsys, tmp_path, source, hint):
    user_error(capsys, prepare(source, tmp_path / "nowhere"), "nowhere", hint)


def test_truncated_cifar_archive(fx, capsys, tmp_path):
    root, _, _ = fx.cifar(tmp_path / "c")
    tar = root / "cifar-10-python.tar.gz"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    user_error(capsys, prepare("cifar10", root), "cifar-10-python.tar.gz", "download it again")


def test_truncated_emnist_zip(fx, capsys, tmp_path):
    root, _, _ = fx.emnist_zip(tmp_path / "e")
    z = root / "gzip.zip"
    z.write_bytes(z.read_bytes()[:-300])  # the central directory is at the end
    user_error(capsys, prepare("emnist-letters", root), "gzip.zip", "download it again")


def test_wrong_archive_in_place_of_emnist(capsys, tmp_path):
    (tmp_path / "e").mkdir()
    with zipfile.ZipFile(tmp_path / "e" / "gzip.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    user_error(capsys, prepare("emnist-balanced", tmp_path / "e"), "not the EMNIST gzip archive")


def test_mismatched_label_file_length(fx, capsys, tmp_path):
    root, _, _ = fx.emnist_zip(tmp_path / "e", n=30, n_labels=29)
    user_error(capsys, ["train", "emnist-letters", "--steps", 1, "--set", f"data.root={root}"],
               "has 30 images but", "29 labels")


def test_folder_with_no_images(capsys, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    user_error(capsys, ["data", "prepare", tmp_path / "empty", "--resolution", 16, "--out", tmp_path / "o"],
               "no images (.jpg, .jpeg, .png, .webp) under")


def test_folder_of_only_damaged_images(fx, capsys, tmp_path):
    root = fx.folder(tmp_path / "pics", {"": 3})
    for p in root.glob("*.jpg"):
        p.write_bytes(b"\xff\xd8\xff garbage")
    user_error(capsys, ["data", "prepare", root, "--resolution", 16, "--out", tmp_path / "o", "--quiet"],
               "none of the 3 images of 'folder' could be decoded", "img000.jpg")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_training_on_a_folder_with_no_images(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    user_error(capsys, ["train", "--steps", 1, "--set", "data.dataset=folder",
                        "--set", f"data.root={tmp_path / 'empty'}", "--set", "model.conditioning=none"], "no images")


def test_loose_image_with_class_folders(fx, capsys, tmp_path):
    root = fx.folder(tmp_path / "pics", {"": 1, "cats": 1})
    user_error(capsys, prepare("folder", root, "--class-folders"), "is not inside a class sub-folder")


def test_unknown_celeba_attribute(fx, capsys, tmp_path):
    root = fx.celeba(tmp_path / "celeba", n=2)
    user_error(capsys, prepare("celeba", root, "--attribute", "Hat"), "no attribute 'Hat'", "Male, Smiling")


def test_lsun_needs_categories_and_known_ones(fx, capsys, tmp_path):
    root = fx.lsun(tmp_path / "lsun", n=2)
    user_error(capsys, prepare("lsun", root), "data.categories=")
    user_error(capsys, prepare("lsun", root, "--categories", "church_outdoor,castle"), "unknown LSUN category 'castle'")
    user_error(capsys, prepare("lsun", root, "--categories", "church_outdoor,bedroom"), "bedroom_train_lmdb")


def test_damaged_imagenet_batch(fx, capsys, tmp_path):
    root, _, _ = fx.imagenet(tmp_path / "i")
    (root / "train_data_batch_2.npz").write_bytes(b"PK\x03\x04 broken")
    user_error(capsys, prepare("imagenet32", root), "train_data_batch_2.npz", "download it again")


def test_imagenet_labels_out_of_range(capsys, tmp_path):
    (tmp_path / "i").mkdir()
    np.savez(tmp_path / "i" / "train_data_batch_1.npz", data=np.zeros((2, 3072), np.uint8), labels=np.array([0, 5]))
    user_error(capsys, prepare("imagenet32", tmp_path / "i"), "not 1..1000")


def test_unknown_source_and_bad_options(capsys, tmp_path):
    user_error(capsys, ["data", "prepare", "no-such-thing", "--resolution", 16, "--out", tmp_path],
               "neither a data source")
    user_error(capsys, ["data", "prepare", "cifar10", "--resolution", 4, "--out", tmp_path], "too small")
    user_error(capsys, ["train", "--set", "data.loader=fast"], "choose one of auto, device, stream, dali")
    user_error(capsys, ["train", "--set", "data.crop=1.5"], "data.crop")
