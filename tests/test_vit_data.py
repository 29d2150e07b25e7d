"""Dataset loaders of the ViT experiments on small files in each dataset's on-disk format,
written here (no download): idx-ubyte (EMNIST letters, FashionMNIST), CIFAR-10 pickles,
SVHN .mat; the digits shift; the per-class budget. Budget: a few seconds."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")

from loradyn.errors import LoradynError  # noqa: E402
from loradyn.vit.config import DataSpec  # noqa: E402
from loradyn.vit.data import apply_shift, load_raw, load_task, per_class_subset  # noqa: E402


def _write_idx_images(path, x: np.ndarray) -> None:
    path.write_bytes(struct.pack(">IIII", 0x0803, *x.shape) + x.astype(np.uint8).tobytes())


def _write_idx_labels(path, y: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x0801, len(y)) + y.astype(np.uint8).tobytes())


def _images(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_fashionmnist_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    data = {}
    for split, n in (("train", 12), ("t10k", 5)):
        x, y = _images(n, (28, 28), n), np.arange(n) % 10
        _write_idx_images(raw / f"{split}-images-idx3-ubyte", x)
        _write_idx_labels(raw / f"{split}-labels-idx1-ubyte", y)
        data[split] = (x, y)
    x, y = load_raw("fashionmnist", True, tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255.0, data["train"][0], atol=1e-3)
    np.testing.assert_array_equal(y, data["train"][1])
    xt, _ = load_raw("fashionmnist", False, tmp_path)
    assert xt.shape == (5, 1, 28, 28)


def test_emnist_letters_idx_files_are_transposed_and_relabelled(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 30), ("test", 8)):
        x = _images(n, (28, 28), n)
        _write_idx_images(raw / f"emnist-letters-{split}-images-idx3-ubyte", x)
        _write_idx_labels(raw / f"emnist-letters-{split}-labels-idx1-ubyte",
                          1 + np.arange(n) % 26)
    stored = _images(30, (28, 28), 30)
    x, y = load_raw("emnist-letters", True, tmp_path)
    np.testing.assert_allclose(x[:, 0] * 255.0, stored.transpose(0, 2, 1), atol=1e-3)
    assert y.min() == 0 and y.max() == 25 and y[0] == 0
    task = load_task(DataSpec("emnist-letters", rotation=45.0, noise_std=0.3), tmp_path)
    assert task.num_classes == 26 and tuple(task.x_test.shape) == (8, 1, 28, 28)


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = _images(4, (3 * 32 * 32,), i)
        y = [(i + j) % 10 for j in range(4)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": y, "batch_label": name}, f)
        batches[name] = (x, y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)]}, f)
    x, y = load_raw("cifar10", True, tmp_path)
    assert x.shape == (20, 3, 32, 32)
    np.testing.assert_allclose(x[4].reshape(-1) * 255, batches["data_batch_2"][0][0], atol=1e-3)
    assert list(y[:4]) == batches["data_batch_1"][1]
    xt, yt = load_raw("cifar10", False, tmp_path)
    assert xt.shape == (4, 3, 32, 32) and list(yt) == batches["test_batch"][1]
    (folder / "data_batch_3").unlink()
    with pytest.raises(LoradynError, match="cifar10 not found"):
        load_raw("cifar10", True, tmp_path)


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    for split, n in (("train", 12), ("test", 3)):
        X = _images(n, (32, 32, 3), n).transpose(1, 2, 3, 0)  # (32, 32, 3, N)
        y = (1 + np.arange(n) % 10).reshape(-1, 1)  # 1..10, 10 = digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": y})
    x, y = load_raw("svhn", True, tmp_path)
    X = _images(12, (32, 32, 3), 12)
    assert x.shape == (12, 3, 32, 32)
    np.testing.assert_allclose(x[2] * 255, X[2].transpose(2, 0, 1), atol=1e-3)
    assert list(y) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # the label 10 is the digit 0
    _, yt = load_raw("svhn", False, tmp_path)
    assert list(yt) == [1, 2, 3]
    with pytest.raises(LoradynError, match="svhn not found"):
        load_raw("svhn", True, tmp_path / "elsewhere")


def test_missing_idx_files_are_a_user_error(tmp_path):
    with pytest.raises(LoradynError, match="--download"):
        load_raw("fashionmnist", True, tmp_path)


def test_digits_split_and_shift():
    src = load_task(DataSpec("digits"))
    assert len(src.y_train) + len(src.y_test) == 1797
    assert abs(len(src.y_test) - 599) <= 1 and src.num_classes == 10
    assert float(src.x_train.min()) == -1.0 and float(src.x_train.max()) == 1.0
    spec = DataSpec("digits", rotation=90.0, noise_std=0.0)
    rot = load_task(spec)
    # a 90-degree rotation is counter-clockwise, i.e. torch.rot90 with k=1
    np.testing.assert_allclose(rot.x_train.numpy(), torch.rot90(src.x_train, 1, (-2, -1)).numpy(),
                               atol=1e-5)
    noisy = DataSpec("digits", rotation=0.0, noise_std=0.5, shift_seed=3)
    a, b = load_task(noisy), load_task(noisy)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    d = (a.x_train - src.x_train) * 0.5  # back to pixel units
    assert float(d.std()) == pytest.approx(0.5, rel=0.05)
    c = load_task(DataSpec("digits", noise_std=0.5, shift_seed=4))
    assert not torch.equal(a.x_train, c.x_train)
    x = torch.zeros(2, 1, 8, 8)
    assert torch.equal(apply_shift(x, DataSpec("digits"), True), x)


def test_per_class_subset():
    y = np.repeat(np.arange(4), 10)
    a = per_class_subset(y, 3, seed=0)
    assert np.array_equal(a, per_class_subset(y, 3, seed=0))
    assert not np.array_equal(a, per_class_subset(y, 3, seed=1))
    assert np.bincount(y[a]).tolist() == [3, 3, 3, 3] and len(set(a)) == 12
    with pytest.raises(LoradynError, match="per-class budget"):
        per_class_subset(y, 11, seed=0)
