"""Datasets (robustbench_leak/data): IDX files, the Fashion-MNIST loader, subsets, synthetic data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_leak.data import (
    DataMissingError,
    IdxFormatError,
    ImageDataset,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    read_idx,
    write_idx,
)

FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def pack_images(images: np.ndarray) -> bytes:
    """IDX by hand: magic 0x00000803 (ubyte, 3 dims), then N, rows, cols as big-endian int32."""
    n, r, c = images.shape
    return struct.pack(">IIII", 0x00000803, n, r, c) + images.astype(np.uint8).tobytes()


def pack_labels(labels: np.ndarray) -> bytes:
    """IDX by hand: magic 0x00000801 (ubyte, 1 dim), then N as big-endian int32."""
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def write_bytes(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def make_arrays(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
            "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_folder(folder: Path, arrays: dict[str, np.ndarray], gz: dict[str, bool], by_hand: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in FILES.items():
        path = folder / (stem + (".gz" if gz[key] else ""))
        if by_hand:
            data = pack_images(arrays[key]) if key.endswith("_x") else pack_labels(arrays[key])
            write_bytes(path, data)
        else:
            write_idx(path, arrays[key])


# ---------------------------------------------------------------- IDX format


def test_write_idx_bytes_equal_hand_packed(tmp_path):
    arrays = make_arrays()
    write_idx(tmp_path / "img", arrays["train_x"])
    write_idx(tmp_path / "lab", arrays["train_y"])
    assert (tmp_path / "img").read_bytes() == pack_images(arrays["train_x"])
    assert (tmp_path / "lab").read_bytes() == pack_labels(arrays["train_y"])
    # header by hand: 00 00 08 03 | 00 00 00 0c (12) | 00 00 00 1c (28) | 00 00 00 1c (28)
    assert (tmp_path / "img").read_bytes()[:16] == bytes.fromhex("00000803" "0000000c" "0000001c" "0000001c")
    write_idx(tmp_path / "img.gz", arrays["train_x"])
    assert gzip.decompress((tmp_path / "img.gz").read_bytes()) == pack_images(arrays["train_x"])


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("by_hand", [False, True])
def test_read_idx_round_trip(tmp_path, suffix, by_hand):
    arrays = make_arrays()
    img, lab = tmp_path / f"img{suffix}", tmp_path / f"lab{suffix}"
    if by_hand:
        write_bytes(img, pack_images(arrays["train_x"]))
        write_bytes(lab, pack_labels(arrays["train_y"]))
    else:
        write_idx(img, arrays["train_x"])
        write_idx(lab, arrays["train_y"])
    x, y = read_idx(img), read_idx(lab)
    assert x.dtype == np.uint8 and x.shape == (12, 28, 28)
    assert y.dtype == np.uint8 and y.shape == (12,)
    np.testing.assert_array_equal(x, arrays["train_x"])
    np.testing.assert_array_equal(y, arrays["train_y"])


def test_read_idx_other_dtype_hand_packed(tmp_path):
    # dtype code 0x0C = big-endian int32, rank 2, dims (2, 3)
    arr = np.array([[1, -2, 300], [70000, 0, -1]], dtype=">i4")
    path = write_bytes(tmp_path / "ints", struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 3) + arr.tobytes())
    got = read_idx(path)
    np.testing.assert_array_equal(got, arr.astype(np.int64))


def test_read_idx_truncated_data_names_file(tmp_path):
    data = pack_images(make_arrays()["train_x"])
    path = write_bytes(tmp_path / "short-images", data[:-7])
    with pytest.raises(IdxFormatError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "(12, 28, 28)" in str(info.value)  # the header's shape
    # trailing bytes are an error too
    path2 = write_bytes(tmp_path / "long-images", data + b"\x00")
    with pytest.raises(IdxFormatError, match="long-images"):
        read_idx(path2)


def test_read_idx_truncated_gzip_names_file(tmp_path):
    raw = gzip.compress(pack_images(make_arrays()["train_x"]))
    path = tmp_path / "broken.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IdxFormatError, match="broken.gz"):
        read_idx(path)


def test_read_idx_bad_magic_and_empty(tmp_path):
    path = write_bytes(tmp_path / "bad", struct.pack(">II", 0x01000801, 0))
    with pytest.raises(IdxFormatError, match=r"bad.*bad magic number 01000801"):
        read_idx(path)
    path = write_bytes(tmp_path / "unknown-dtype", struct.pack(">II", 0x00000701, 0))
    with pytest.raises(IdxFormatError, match="unknown-dtype.*not an IDX file"):
        read_idx(path)
    empty = write_bytes(tmp_path / "empty", b"")
    with pytest.raises(IdxFormatError, match="empty"):
        read_idx(empty)
    with pytest.raises(IdxFormatError, match="cannot read"):
        read_idx(tmp_path / "does-not-exist")


def test_read_idx_truncated_header_names_file(tmp_path):
    path = write_bytes(tmp_path / "cut-header", pack_images(make_arrays()["train_x"])[:9])
    with pytest.raises(IdxFormatError, match="cut-header"):
        read_idx(path)


# ---------------------------------------------------------------- Fashion-MNIST loader


@pytest.mark.parametrize("gz,by_hand", [
    ({k: False for k in FILES}, False),
    ({k: True for k in FILES}, False),
    ({k: True for k in FILES}, True),
    ({"train_x": True, "train_y": False, "test_x": False, "test_y": True}, True),   # a mix
    ({"train_x": False, "train_y": True, "test_x": True, "test_y": False}, False),  # another mix
])
def test_load_fashion_mnist_from_root(tmp_path, gz, by_hand):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, gz, by_hand)
    ds = load_dataset("fashion-mnist", root=str(tmp_path))
    assert isinstance(ds, ImageDataset)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.test_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    for split in ("train", "test"):
        x = getattr(ds, f"{split}_x")
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        ref = torch.from_numpy(arrays[f"{split}_x"]).to(torch.float32).div(255.0).unsqueeze(1)
        torch.testing.assert_close(x, ref, rtol=0, atol=1e-7)
        torch.testing.assert_close(getattr(ds, f"{split}_y"), torch.from_numpy(arrays[f"{split}_y"]).long(),
                                   rtol=0, atol=0)
    assert ds.num_classes == 10 and len(ds.classes) == 10 and ds.classes[0] == "T-shirt/top"
    assert ds.in_chans == 1 and ds.input_shape == (1, 28, 28)
    assert ds.source == str(tmp_path)


def test_pixel_extremes(tmp_path):
    arrays = make_arrays(n_train=2, n_test=1)
    arrays["train_x"][0] = 0
    arrays["train_x"][1] = 255
    arrays["test_x"][0, 0, 0] = 51  # 51 / 255 = 0.2
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=True)
    ds = load_dataset("fashion-mnist", root=tmp_path)
    assert float(ds.train_x[0].max()) == 0.0
    assert float(ds.train_x[1].min()) == 1.0
    assert float(ds.test_x[0, 0, 0, 0]) == pytest.approx(0.2, abs=1e-7)


def test_plain_file_preferred_over_gz(tmp_path):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=False)
    other = make_arrays(seed=1)
    write_idx(tmp_path / (FILES["train_y"] + ".gz"), other["train_y"])
    ds = load_dataset("fashion-mnist", root=tmp_path)
    np.testing.assert_array_equal(ds.train_y.numpy(), arrays["train_y"])


def test_missing_files_raise_data_missing_error(tmp_path):
    with pytest.raises(DataMissingError) as info:
        load_dataset("fashion-mnist", root=str(tmp_path))
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path) in msg and "plain or .gz" in msg
    for stem in FILES.values():
        assert stem in msg
    assert "dataset-fashion-mnist" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_partially_missing_files_raise(tmp_path):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=False)
    (tmp_path / FILES["test_y"]).unlink()
    with pytest.raises(DataMissingError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_env_var_folder_is_used_when_no_root(tmp_path, monkeypatch):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, {k: True for k in FILES}, by_hand=True)
    monkeypatch.setenv("RBLEAK_FASHION_MNIST", str(tmp_path))
    ds = load_dataset("fashion-mnist")
    assert ds.source == str(tmp_path)
    np.testing.assert_array_equal(ds.test_y.numpy(), arrays["test_y"])


def test_truncated_file_in_dataset_raises_idx_format_error(tmp_path):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=True)
    bad = tmp_path / FILES["train_x"]
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(IdxFormatError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(bad) in str(info.value)


def test_mismatched_counts_raise(tmp_path):
    arrays = make_arrays()
    arrays["test_y"] = arrays["test_y"][:4]  # 5 test images, 4 labels
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=True)
    with pytest.raises(IdxFormatError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert "test images (5, 28, 28) and labels (4,) do not match" in msg
    assert FILES["test_x"] in msg and FILES["test_y"] in msg


def test_wrong_rank_raises(tmp_path):
    arrays = make_arrays()
    write_folder(tmp_path, arrays, {k: False for k in FILES}, by_hand=True)
    write_idx(tmp_path / FILES["train_y"], arrays["train_x"])  # images where labels belong
    with pytest.raises(IdxFormatError, match="train images"):
        load_dataset("fashion-mnist", root=tmp_path)


# ---------------------------------------------------------------- subsets


@pytest.fixture()
def fashion_root(tmp_path):
    write_folder(tmp_path, make_arrays(n_train=40, n_test=10), {k: False for k in FILES}, by_hand=False)
    return tmp_path


def test_subset_sizes(fashion_root):
    full = load_dataset("fashion-mnist", root=fashion_root)
    ds = load_dataset("fashion-mnist", root=fashion_root, train_subset=7, test_subset=3)
    assert ds.train_x.shape == (7, 1, 28, 28) and ds.train_y.shape == (7,)
    assert ds.test_x.shape == (3, 1, 28, 28) and ds.test_y.shape == (3,)
    # test subset: the first images
    torch.testing.assert_close(ds.test_x, full.test_x[:3], rtol=0, atol=0)
    # train subset: a seeded permutation of the training set, images and labels kept together
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:7]
    torch.testing.assert_close(ds.train_x, full.train_x[perm], rtol=0, atol=0)
    torch.testing.assert_close(ds.train_y, full.train_y[perm], rtol=0, atol=0)
    assert len(set(perm.tolist())) == 7
    # subsets larger than the data, or None, keep everything
    big = load_dataset("fashion-mnist", root=fashion_root, train_subset=1000, test_subset=None)
    assert len(big.train_y) == 40 and len(big.test_y) == 10
    torch.testing.assert_close(big.train_x, full.train_x, rtol=0, atol=0)


def test_subset_determinism(fashion_root):
    a = load_dataset("fashion-mnist", root=fashion_root, train_subset=10, subset_seed=3)
    b = load_dataset("fashion-mnist", root=fashion_root, train_subset=10, subset_seed=3)
    c = load_dataset("fashion-mnist", root=fashion_root, train_subset=10, subset_seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_x, c.train_x)
    # same test images regardless of the seed
    assert torch.equal(a.test_x, c.test_x)


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_seed_dependent():
    opts = dict(n_train=40, n_test=20, image_size=12, num_classes=4)
    a = load_dataset("synthetic", seed=0, **opts)
    b = load_dataset("synthetic", seed=0, **opts)
    c = load_dataset("synthetic", seed=1, **opts)
    for split in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, split), getattr(b, split)), split
    assert not torch.equal(a.train_x, c.train_x)
    assert not torch.equal(a.test_x, c.test_x)
    assert a.source == "synthetic(seed=0)" and c.source == "synthetic(seed=1)"


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_values_shapes_and_balance(channels):
    ds = load_dataset("synthetic", n_train=60, n_test=30, image_size=10, channels=channels, num_classes=6)
    assert ds.train_x.shape == (60, channels, 10, 10) and ds.test_x.shape == (30, channels, 10, 10)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    for x in (ds.train_x, ds.test_x):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.bincount(ds.train_y, minlength=6).tolist() == [10] * 6
    assert torch.bincount(ds.test_y, minlength=6).tolist() == [5] * 6
    assert ds.num_classes == 6 and ds.classes == [f"class{i}" for i in range(6)]
    assert len(ds.mean) == channels and len(ds.std) == channels
    # recorded stats are the training set's per-channel stats (rounded to 4 decimals)
    np.testing.assert_allclose(ds.mean, ds.train_x.mean(dim=(0, 2, 3)).numpy(), atol=1e-4)
    np.testing.assert_allclose(ds.std, ds.train_x.std(dim=(0, 2, 3)).numpy(), atol=1e-4)


def test_synthetic_subset():
    ds = load_dataset("synthetic", n_train=40, n_test=20, image_size=8, train_subset=10, test_subset=5)
    assert len(ds.train_y) == 10 and len(ds.test_y) == 5


# ---------------------------------------------------------------- registry errors


def test_unknown_dataset_lists_known():
    with pytest.raises(KeyError) as info:
        load_dataset("cifar-1000")
    msg = str(info.value)
    assert "unknown dataset 'cifar-1000'" in msg
    assert "fashion-mnist" in msg and "synthetic" in msg
    assert {"fashion-mnist", "synthetic"} <= {e.name for e in list_datasets()}
    assert get_dataset_entry("synthetic").options()["seed"] == 0


def test_unknown_loader_option_raises():
    with pytest.raises(ValueError) as info:
        load_dataset("synthetic", n_trian=5)
    msg = str(info.value)
    assert "no option ['n_trian']" in msg
    for opt in ("train_subset", "test_subset", "subset_seed", "n_train", "seed"):
        assert opt in msg
    with pytest.raises(ValueError, match=r"no option \['path'\].*root"):
        load_dataset("fashion-mnist", path="/tmp")


@pytest.mark.parametrize("kind", ["bomb", "truncated", "not-an-image"])
def test_an_undecodable_image_names_its_file(tmp_path, kind):
    """A class folder's bad file (a decompression bomb's header, a cut PNG, text named .png) is a one-line
    DataMissingError naming it, not PIL's own exception."""
    import struct
    import zlib

    from robustbench_leak.data import DataMissingError
    from robustbench_leak.data.imagefolder import LazyImages

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    path = tmp_path / f"{kind}.png"
    path.write_bytes({"bomb": png, "truncated": png[:30], "not-an-image": b"hello"}[kind])
    with pytest.raises(DataMissingError, match=rf"{kind}\.png: cannot decode image"):
        LazyImages([path], 32, 36)[0]


def test_read_idx_reads_no_more_than_its_header_declares(tmp_path):
    # a gzip bomb: a valid header and 200 MB of zeros after its data, in a file of about 200 KB
    data = pack_images(make_arrays()["train_x"])
    path = tmp_path / "bomb-images.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(data)
        for _ in range(200):
            fh.write(b"\0" * (1 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(IdxFormatError, match=r"bomb-images.gz: header says shape \(12, 28, 28\).*more than"):
        read_idx(path)
    # a header that declares more data than any dataset of this format holds is refused before reading on
    huge = write_bytes(tmp_path / "huge-images", struct.pack(">IIII", 0x00000803, 1 << 30, 1 << 15, 1 << 15))
    with pytest.raises(IdxFormatError, match=r"huge-images: header says shape .* at most"):
        read_idx(huge)


def test_a_class_folder_lists_regular_image_files_only(tmp_path):
    import os

    from PIL import Image

    from robustbench_leak.data.imagefolder import scan

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "a.png")
    (tmp_path / "cat" / "folder.jpg").mkdir()  # a folder named like an image
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "dog" / "pipe.png")  # PIL would wait on it forever
    paths, labels, classes = scan(tmp_path)
    assert classes == ["cat", "dog"] and labels == [0, 1]
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["cat/a.png", "dog/a.png"]
