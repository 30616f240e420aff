"""Writers of small files in original dataset formats, shared by the tests."""

import gzip
import struct

import numpy as np


def write_idx(path, arr) -> None:
    """A gzipped uint8 IDX file (the MNIST/Fashion-MNIST format)."""
    arr = np.asarray(arr)
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.astype(np.uint8).tobytes())
