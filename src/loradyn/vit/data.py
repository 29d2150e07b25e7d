"""Datasets of the ViT transfer protocol, as in-memory tensors.

Every dataset is returned as float32 images ``(N, C, H, W)`` normalized as
``(x - 0.5) / 0.5`` from pixels in [0, 1], and int64 labels in ``[0, num_classes)``.
Small images make a plain tensor loop faster than a ``DataLoader``, and the whole set fits
on the GPU at paper scale (EMNIST letters is 125k 28x28 images).

Sources and on-disk layouts under ``data_dir`` (torchvision's):

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, no file, no download),
  split 2/3 train, 1/3 test, stratified, with a fixed seed.
- ``emnist-letters``: ``EMNIST/raw/emnist-letters-{train,test}-{images-idx3,labels-idx1}-ubyte``
  read by ``torchvision.datasets.EMNIST``; labels 1..26 are shifted to 0..25 and the images,
  stored transposed in the EMNIST files, are transposed back to upright.
- ``fashionmnist``: ``FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` read by
  ``torchvision.datasets.FashionMNIST``.
- ``cifar10``: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (python
  pickles). They are read here directly (same format) with :func:`safe_unpickle`, which
  never runs code from the file: it admits only the plain containers, strings, bytes,
  numbers and numpy arrays a CIFAR batch holds. With ``download=True`` torchvision
  fetches and verifies them first.
- ``svhn``: ``{train,test}_32x32.mat`` (MATLAB, ``X`` of shape (32, 32, 3, N), ``y`` with
  10 for the digit 0). Read here with ``scipy.io.loadmat`` for the same reason; with
  ``download=True`` torchvision fetches and verifies them first.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LoradynError
from .config import DataSpec

NUM_CLASSES = {"digits": 10, "emnist-letters": 26, "fashionmnist": 10, "cifar10": 10, "svhn": 10}
GEOMETRY = {  # (channels, image size)
    "digits": (1, 8),
    "emnist-letters": (1, 28),
    "fashionmnist": (1, 28),
    "cifar10": (3, 32),
    "svhn": (3, 32),
}


# the only globals a CIFAR batch (or any pickled plain numpy array) refers to: the array
# reconstructor, the array and dtype classes and the scalar constructor, under numpy 1.x
# (numpy.core) and 2.x (numpy._core) names
_SAFE_GLOBALS = frozenset(
    (mod, name)
    for core in ("numpy.core", "numpy._core")
    for mod, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype"),
     # how a Python 3 pickle of protocol < 3 spells bytes: encode(latin-1 text, "latin1")
     ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside :data:`_SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused a persistent id")


def safe_unpickle(path: str | Path, encoding: str = "latin1") -> object:
    """Read a pickle that may hold only plain data; never execute code from it.

    Admitted: ``dict``, ``list``, ``tuple``, ``set``, ``str``, ``bytes``, numbers, ``None``,
    booleans and numpy arrays/scalars (what a CIFAR batch holds). Any other global (a
    function, a class, ``os.system``, ...) is refused before it is looked up, so a crafted
    file cannot run its payload.

    Raises
    ------
    LoradynError
        When the file refers to anything else, or is not a readable pickle.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
        return _SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError as exc:
        raise LoradynError(
            f"{p} is not a plain data pickle ({exc}): it was not loaded; replace it with the "
            "official file"
        ) from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError) as exc:
        raise LoradynError(
            f"{p} is not a readable data pickle ({type(exc).__name__}: {exc}); replace it "
            "with the official file"
        ) from None


@dataclass
class TaskData:
    """A data set in memory: normalized float images and int64 labels (torch tensors)."""

    spec: DataSpec
    x_train: object  # torch.Tensor (N, C, H, W)
    y_train: object  # torch.Tensor (N,)
    x_test: object
    y_test: object
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def default_data_dir() -> Path:
    """``$LORADYN_DATA`` or ``~/.cache/loradyn/data``."""
    env = os.environ.get("LORADYN_DATA")
    return Path(env) if env else Path.home() / ".cache" / "loradyn" / "data"


def _missing(name: str, root: Path, what: str) -> LoradynError:
    return LoradynError(
        f"{name} not found under {root} ({what}); put the files there or pass --download "
        "on a machine with network access"
    )


def dataset_files(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The files :func:`load_raw` reads for ``name`` (empty for the bundled digits)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "digits":
        return []
    if name == "emnist-letters":
        return [root / "EMNIST" / "raw" / f"emnist-letters-{s}-{k}"
                for s in ("train", "test") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if name == "fashionmnist":
        return [root / "FashionMNIST" / "raw" / f"{s}-{k}"
                for s in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        return [root / "cifar-10-batches-py" / n for n in names]
    if name == "svhn":
        return [root / "train_32x32.mat", root / "test_32x32.mat"]
    raise LoradynError(f"unknown dataset {name!r}")


def dataset_available(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether every file of ``name`` is present under ``data_dir`` (no download)."""
    return all(p.exists() for p in dataset_files(name, data_dir))


def load_raw(
    name: str, train: bool, data_dir: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 ``(N, C, H, W)`` in [0, 1] and int64 labels of one split."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "digits":
        return _load_digits(train)
    if name in ("emnist-letters", "fashionmnist"):
        return _load_idx(name, train, root, download)
    if name == "cifar10":
        return _load_cifar10(train, root, download)
    if name == "svhn":
        return _load_svhn(train, root, download)
    raise LoradynError(f"unknown dataset {name!r}")


def _load_digits(train: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=1 / 3, stratify=y, random_state=0)
    sel = np.sort(tr if train else te)
    return x[sel], y[sel]


def _load_idx(
    name: str, train: bool, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    try:
        if name == "emnist-letters":
            ds = datasets.EMNIST(str(root), split="letters", train=train, download=download)
        else:
            ds = datasets.FashionMNIST(str(root), train=train, download=download)
    except RuntimeError as exc:
        folder = "EMNIST/raw" if name == "emnist-letters" else "FashionMNIST/raw"
        raise _missing(name, root, f"idx-ubyte files in {folder}: {exc}") from None
    x = ds.data.numpy()
    y = ds.targets.numpy().astype(np.int64)
    if name == "emnist-letters":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))  # EMNIST files are stored transposed
        y = y - 1  # letters are labelled 1..26
    return (x[:, None].astype(np.float32) / 255.0), y


def _load_cifar10(train: bool, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    if download:
        from torchvision import datasets

        datasets.CIFAR10(str(root), train=train, download=True)
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for n in names:
        p = folder / n
        if not p.exists():
            raise _missing("cifar10", root, f"missing {p}")
        entry = safe_unpickle(p)
        if not isinstance(entry, dict) or "data" not in entry or not (
                "labels" in entry or "fine_labels" in entry):
            raise LoradynError(
                f"{p} is not a CIFAR batch (a dict with 'data' and 'labels'); replace it with "
                "the official file"
            )
        try:
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry.get("labels", entry.get("fine_labels")),
                                 dtype=np.int64).reshape(-1))
        except (TypeError, ValueError, OverflowError) as exc:
            raise LoradynError(f"{p} is not a CIFAR batch ({exc}); replace it with the "
                               "official file") from None
        if len(ys[-1]) != len(xs[-1]):
            raise LoradynError(f"{p} holds {len(xs[-1])} images but {len(ys[-1])} labels; "
                               "replace it with the official file")
    if not (folder / "batches.meta").exists():
        raise _missing("cifar10", root, f"missing {folder / 'batches.meta'}")
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)


def _load_svhn(train: bool, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    split = "train" if train else "test"
    if download:
        from torchvision import datasets

        datasets.SVHN(str(root), split=split, download=True)
    p = root / f"{split}_32x32.mat"
    if not p.exists():
        raise _missing("svhn", root, f"missing {p}")
    from scipy.io import loadmat

    try:
        m = loadmat(str(p))
        x = np.transpose(m["X"], (3, 2, 0, 1))  # (32, 32, 3, N) -> (N, 3, 32, 32)
        y = m["y"].astype(np.int64).reshape(-1)
    except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise LoradynError(f"{p} is not an SVHN .mat file with X and y ({exc}); replace it "
                           "with the official file") from None
    y[y == 10] = 0
    return x.astype(np.float32) / 255.0, y


def apply_shift(x, spec: DataSpec, train: bool):
    """Rotate by ``spec.rotation`` degrees (bilinear, zero fill) then add Gaussian noise.

    ``x'`` = rotate(x) + noise_std * xi, xi ~ N(0, 1) i.i.d. per pixel, drawn from a torch
    generator seeded with ``2 * shift_seed + (0 if train else 1)``: deterministic, and the
    train and test noise differ.
    """
    import torch
    from torchvision.transforms.v2 import functional as TF

    if spec.rotation != 0.0:
        x = TF.rotate(
            x, angle=float(spec.rotation), interpolation=TF.InterpolationMode.BILINEAR, fill=0.0
        )
    if spec.noise_std > 0:
        g = torch.Generator().manual_seed(2 * int(spec.shift_seed) + (0 if train else 1))
        x = x + float(spec.noise_std) * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return x


def load_task(
    spec: DataSpec, data_dir: str | Path | None = None, download: bool = False
) -> TaskData:
    """Load, subset, shift and normalize a data set (see the module docstring)."""
    import torch

    out = {}
    for train in (True, False):
        x, y = load_raw(spec.name, train, data_dir, download)
        if train and spec.train_subset and spec.train_subset < len(y):
            rng = np.random.default_rng(spec.shift_seed)
            sel = np.sort(rng.choice(len(y), size=spec.train_subset, replace=False))
            x, y = x[sel], y[sel]
        xt = apply_shift(torch.from_numpy(np.ascontiguousarray(x)), spec, train)
        out[train] = ((xt - 0.5) / 0.5, torch.from_numpy(y))
    return TaskData(spec, out[True][0], out[True][1], out[False][0], out[False][1],
                    NUM_CLASSES[spec.name])


def per_class_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` examples of every class, drawn without replacement with a
    ``numpy.random.default_rng(seed)``; sorted. Raises if a class is too small."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise LoradynError(
                f"class {c} has only {len(idx)} training examples, fewer than the per-class "
                f"budget {per_class}; lower per_class"
            )
        picks.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))
