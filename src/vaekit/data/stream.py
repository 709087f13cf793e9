"""Data given in Python: arrays and tensors in memory, or a torch Dataset read batch by batch.

:func:`python_dataset` turns what a user holds into a vaekit :class:`Dataset`:

- an array or tensor ``(N, ...)``, a pair ``(x, y)`` of examples and labels, or a dict of
  splits ``{"train": ..., "test": ..., "valid": ...}`` (each an array or a pair) become
  in-memory splits, checked and scaled like files (:func:`vaekit.data.make_dataset`);
- a ``torch.utils.data.Dataset`` whose items are ``x`` or ``(x, y)`` stays where it is:
  its splits are :class:`StreamSplit` views that read the examples of each batch through a
  ``DataLoader`` (``workers`` processes), so data that do not fit in memory can be trained
  on. Its kind (binary, grey, real) and shape are read off its first examples.

Without a test split, a seeded 10% of the examples is held out as the test split.

Example:
    >>> import numpy as np
    >>> ds = python_dataset(np.random.default_rng(0).random((50, 8, 8)))
    >>> len(ds.train), len(ds.test), ds.shape, ds.kind
    (45, 5, (1, 8, 8), 'grey')
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vaekit.data.core import DataError, Dataset, Split, make_dataset

__all__ = ["StreamSplit", "python_dataset", "PYTHON_DATA", "TEST_FRACTION"]

# The name a run's config.json gives data handed to vaekit.fit in Python.
PYTHON_DATA = "<python>"
# The share held out as the test split when the data come without one.
TEST_FRACTION = 0.1
# Examples read to tell the kind and shape of a streamed dataset.
_PEEK = 256


def _item(item: Any) -> tuple[Tensor, int | None]:
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise DataError(
                f"a dataset item must be x or a pair (x, y), got a sequence of {len(item)} values"
            )
        x, y = item
        return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x), int(y)
    return torch.as_tensor(np.asarray(item) if not isinstance(item, Tensor) else item), None


class StreamSplit:
    """A split of a torch Dataset, read a batch at a time (``indices`` into ``dataset``).

    ``x`` is never materialised; :meth:`batches` yields ``(x, y)`` for lists of positions
    in this split, through a ``DataLoader`` with ``workers`` processes. Examples are
    reshaped to ``shape`` and scaled by ``scale`` (255 for 8-bit images).
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int] | np.ndarray,
        shape: tuple[int, ...],
        labelled: bool,
        scale: float = 1.0,
        workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = tuple(shape)
        self.labelled = labelled
        self.scale = scale
        self.workers = workers
        self.device = torch.device("cpu")
        self.y: Tensor | None = None  # labels are read with the batches

    def __len__(self) -> int:
        return int(len(self.indices))

    def to(self, device: torch.device | str) -> StreamSplit:
        out = StreamSplit(
            self.dataset, self.indices, self.shape, self.labelled, self.scale, self.workers
        )
        out.device = torch.device(device)
        return out

    def subset(self, positions: Sequence[int] | np.ndarray | Tensor) -> StreamSplit:
        pos = np.asarray(positions, dtype=np.int64)
        out = StreamSplit(
            self.dataset, self.indices[pos], self.shape, self.labelled, self.scale, self.workers
        )
        out.device = self.device
        return out

    def _collate(self, items: list[Any]) -> tuple[Tensor, Tensor | None]:
        xs, ys = zip(*(_item(it) for it in items), strict=True)
        x = torch.stack([t.reshape(self.shape) for t in xs]).float()
        if self.scale != 1.0:
            x = x / self.scale
        y = torch.tensor(ys, dtype=torch.long) if self.labelled else None
        return x, y

    def batches(self, batches: Sequence[Sequence[int]]) -> Iterator[tuple[Tensor, Tensor | None]]:
        """``(x, y)`` on the split's device for each list of positions, in order."""
        index_batches = [self.indices[np.asarray(b, dtype=np.int64)].tolist() for b in batches]
        loader = DataLoader(
            self.dataset,
            batch_sampler=index_batches,
            num_workers=self.workers,
            collate_fn=self._collate,
        )
        for x, y in loader:
            yield x.to(self.device), None if y is None else y.to(self.device)

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The whole split in order, ``size`` examples at a time."""
        n = len(self)
        yield from self.batches([list(range(i, min(i + size, n))) for i in range(0, n, size)])


def _stream_dataset(
    dataset: Any, test: Any, valid: Any, name: str, workers: int, seed: int
) -> Dataset:
    n = len(dataset)
    if n < 2:
        raise DataError(f"the dataset holds {n} example(s); training needs at least two")
    peek = [_item(dataset[i]) for i in range(min(n, _PEEK))]
    first = peek[0][0]
    labelled = peek[0][1] is not None
    raw = torch.stack([x.reshape(first.shape).float() for x, _ in peek])
    scale = 255.0 if first.dtype == torch.uint8 else 1.0
    values = raw / scale
    if not bool(torch.isfinite(values).all()):
        raise DataError(f"{name}: its first examples hold NaN or infinite values; clean them first")
    if values.min() < 0 or values.max() > 1:
        kind = "real"
    elif bool(((values == 0) | (values == 1)).all()):
        kind = "binary"
    else:
        kind = "grey"
    shape = tuple(first.shape)
    if len(shape) == 2:  # (H, W) images get their channel
        shape = (1, *shape)
    is_image = len(shape) == 3
    if not is_image:
        shape = (int(np.prod(shape)),)
    classes = max((y for _, y in peek if y is not None), default=-1) + 1

    def split_of(ds: Any) -> StreamSplit:
        return StreamSplit(ds, range(len(ds)), shape, labelled, scale, workers)

    if test is None:
        perm = np.random.default_rng(seed).permutation(n)
        cut = min(max(int(round(n * TEST_FRACTION)), 1), n - 1)
        base = split_of(dataset)
        train, test_split = base.subset(np.sort(perm[cut:])), base.subset(np.sort(perm[:cut]))
    else:
        train, test_split = split_of(dataset), split_of(test)
    return Dataset(
        name=name,
        train=train,  # type: ignore[arg-type]
        test=test_split,  # type: ignore[arg-type]
        valid=None if valid is None else split_of(valid),  # type: ignore[arg-type]
        shape=shape,
        num_classes=max(classes, 0) if labelled else 0,
        kind=kind,
        is_image=is_image,
    )


def _pair(value: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = value
        return _array(x, what), None if y is None else _array(y, f"{what} labels")
    return _array(value, what), None


def _array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001 - anything numpy cannot take
        raise DataError(
            f"{what}: cannot be read as an array ({type(value).__name__}: {e})"
        ) from None


def python_dataset(
    data: Any,
    *,
    test: Any = None,
    valid: Any = None,
    name: str = PYTHON_DATA,
    workers: int = 0,
    seed: int = 0,
) -> Dataset:
    """A vaekit Dataset from data held in Python (see the module docstring).

    ``test`` and ``valid`` give those splits explicitly (same forms as ``data``); a
    ``dict`` of splits may name them instead.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, TorchDataset) and not isinstance(data, Tensor):
        return _stream_dataset(data, test, valid, name, workers, seed)
    if isinstance(data, dict):
        unknown = set(data) - {"train", "test", "valid"}
        if unknown or "train" not in data:
            raise DataError(
                f"a dict of splits needs 'train' (and may have 'test', 'valid'); got {sorted(data)}"
            )
        test = data.get("test", test)
        valid = data.get("valid", valid)
        data = data["train"]
    x, y = _pair(data, "data")
    if x.ndim < 2:
        raise DataError(f"data must be examples (N, ...), got an array of shape {x.shape}")
    if y is not None and len(y) != len(x):
        raise DataError(f"{len(x)} examples but {len(y)} labels; give one label per example")
    if test is None:
        n = len(x)
        if n < 2:
            raise DataError(f"{n} example(s) cannot give a training and a test split")
        perm = np.random.default_rng(seed).permutation(n)
        cut = min(max(int(round(n * TEST_FRACTION)), 1), n - 1)
        a, b = np.sort(perm[cut:]), np.sort(perm[:cut])
        train_pair = (x[a], None if y is None else y[a])
        test_pair = (x[b], None if y is None else y[b])
    else:
        train_pair, test_pair = (x, y), _pair(test, "test")
    valid_pair = None if valid is None else _pair(valid, "valid")
    return make_dataset(name, train_pair, test_pair, valid_pair, source=name)


def split_batches(split: Split | StreamSplit, size: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """A split in order, ``size`` examples at a time, whether in memory or streamed."""
    if isinstance(split, StreamSplit):
        yield from split.chunks(size)
        return
    for i in range(0, len(split), size):
        yield split.x[i : i + size], None if split.y is None else split.y[i : i + size]
