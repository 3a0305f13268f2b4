"""Data sources (uint8 images + labels) and loaders (batches in [-1, 1] on the device)."""

from fastgan.data.augment import Draw
from fastgan.data.base import ImageDataset
from fastgan.data.idx import read_idx
from fastgan.data.loader import DeviceLoader, StreamLoader, make_loader
from fastgan.data.registry import SOURCES, load_dataset, prepare_source
from fastgan.paths import data_home, resolve_root

__all__ = ["SOURCES", "DeviceLoader", "Draw", "ImageDataset", "StreamLoader", "data_home", "load_dataset",
           "make_loader", "prepare_source", "read_idx", "resolve_root"]
