"""Image folders (recursive jpg/png/webp, optional class sub-folders) and aligned CelebA (optional attribute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastgan.config import DataConfig
from fastgan.data.base import check_data_folder
from fastgan.data.items import IMAGE_EXTENSIONS, FileItems, ItemSource, list_images
from fastgan.errors import DataError
from fastgan.paths import resolve_root


def folder_source(cfg: DataConfig) -> ItemSource:
    if not cfg.root:
        raise DataError("dataset 'folder' needs its folder: add --set data.root=DIR")
    root = check_data_folder(Path(cfg.root).expanduser(), "folder", "point --set data.root=DIR at a folder of images")
    paths, skipped = list_images(root)
    if not paths:
        why = f" ({len(skipped)} skipped, first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}{why}: point data.root at a folder "
                        "of images")
    labels, classes = None, []
    if cfg.class_folders:
        loose = [p for p in paths if len(Path(p).parts) == 1]
        if loose:
            raise DataError(f"{root / loose[0]} is not inside a class sub-folder: move it into one, or drop "
                            "data.class_folders")
        classes = sorted({Path(p).parts[0] for p in paths})
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[Path(p).parts[0]] for p in paths], dtype=np.int64)
    return ItemSource("folder", FileItems(root, paths, skipped=skipped), labels, classes, cfg.crop,
                      {"class_folders": cfg.class_folders})


def _attribute_table(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """list_attr_celeba.txt (count line, names line, 'file v1 v2 ...') or Kaggle's list_attr_celeba.csv."""
    lines = path.read_text().splitlines()
    if path.suffix == ".csv":
        names = lines[0].split(",")[1:]
        rows = [ln.split(",") for ln in lines[1:] if ln.strip()]
    else:
        names = lines[1].split()
        rows = [ln.split() for ln in lines[2:] if ln.strip()]
    table = {}
    for r in rows:
        if len(r) != len(names) + 1:
            raise DataError(f"{path} has a row with {len(r) - 1} values for {len(names)} attributes: it is damaged")
        table[r[0]] = [int(v) for v in r[1:]]
    return names, table


def celeba_source(cfg: DataConfig) -> ItemSource:
    base = check_data_folder(resolve_root(cfg.root, "celeba"), "celeba",
                     "CelebA has no direct download: get img_align_celeba.zip (and list_attr_celeba.txt) from "
                     "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, unzip it there or set --set data.root=DIR")
    img_dir = next((d for d in (base / "img_align_celeba" / "img_align_celeba", base / "img_align_celeba", base)
                    if d.is_dir() and any(d.glob("*.jpg"))), None)
    if img_dir is None:
        raise DataError(f"no CelebA images (img_align_celeba/*.jpg) under {base}: unzip img_align_celeba.zip there")
    names = sorted(p.name for p in img_dir.glob("*.jpg"))
    extra: list[Path] = []
    if cfg.split == "test":
        part = next((p for p in (base / "list_eval_partition.txt", img_dir / "list_eval_partition.txt")
                     if p.is_file()), None)
        if part is None:
            raise DataError(f"split 'test' of celeba needs list_eval_partition.txt in {base}: download it with the "
                            "images, or use split train (all images, the usual GAN setting)")
        test = {ln.split()[0] for ln in part.read_text().splitlines() if ln.strip().endswith(" 2")}
        names = [n for n in names if n in test]
        extra.append(part)
    elif cfg.split != "train":
        raise DataError(f"unknown split '{cfg.split}' for celeba: use train (all images) or test")
    labels, classes = None, []
    if cfg.attribute:
        attr_file = next((p for p in (base / "list_attr_celeba.txt", base / "list_attr_celeba.csv",
                                      img_dir / "list_attr_celeba.txt") if p.is_file()), None)
        if attr_file is None:
            raise DataError(f"data.attribute={cfg.attribute} needs list_attr_celeba.txt in {base}: download it "
                            "from the CelebA page, or drop data.attribute")
        attrs, table = _attribute_table(attr_file)
        if cfg.attribute not in attrs:
            raise DataError(f"CelebA has no attribute '{cfg.attribute}': choose one of {', '.join(attrs)}")
        col = attrs.index(cfg.attribute)
        missing = [n for n in names if n not in table]
        if missing:
            raise DataError(f"{attr_file} has no row for {missing[0]} ({len(missing)} images lack one): the "
                            "attribute file does not match the images")
        labels = np.array([1 if table[n][col] > 0 else 0 for n in names], dtype=np.int64)
        classes = [f"not {cfg.attribute}", cfg.attribute]
        extra.append(attr_file)
    return ItemSource("celeba", FileItems(img_dir, names, tuple(extra)), labels, classes, cfg.crop,
                      {"split": cfg.split, "attribute": cfg.attribute})
