"""Load training and evaluation data from the Hub, a save_to_disk directory or files, give every
example a stable id, encode labels and tokenize (no padding: the collator pads per batch)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soicurate.errors import UsageError
from soicurate.recording.ids import as_integer_ids, stable_ids

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
ID_COLUMN = "example_id"


@dataclass
class DataSpec:
    """Where a dataset comes from: `path` is a Hub name, a save_to_disk directory or files."""

    path: str
    split: str = "train"
    config: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str, default_split: str = "train") -> "DataSpec":
        """'name', 'name:split', 'name[config]:split', 'file.csv' or 'dir' (split optional);
        a leading ~ is the home directory (config files are not expanded by a shell)."""
        if text.startswith("~"):
            text = os.path.expanduser(text)
        path, split = text, default_split
        if ":" in text and not Path(text).exists():
            path, split = text.rsplit(":", 1)
        config = None
        if path.endswith("]") and "[" in path:
            path, config = path[:-1].split("[", 1)
        return cls(path=path, split=split, config=config)

    @property
    def name(self) -> str:
        return Path(self.path).stem if Path(self.path).exists() else self.path


def load_split(spec: DataSpec):
    """The requested split as a datasets.Dataset, from disk, files or the Hub."""
    import datasets

    p = Path(spec.path)
    try:
        if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(p))
            if isinstance(loaded, datasets.DatasetDict):
                if spec.split not in loaded:
                    raise UsageError(f"{p}: has no split {spec.split!r} (splits: {', '.join(loaded)})")
                return loaded[spec.split]
            return loaded
        if p.is_file():
            builder = FILE_BUILDERS.get(p.suffix.lower())
            if builder is None:
                raise UsageError(f"{p}: unsupported file type (use CSV, TSV, JSON, JSONL or Parquet)")
            kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
            return datasets.load_dataset(builder, data_files={"data": str(p)}, split="data", **kwargs)
        if p.exists():
            raise UsageError(f"{p}: a directory that is not a save_to_disk dataset")
        return datasets.load_dataset(spec.path, spec.config, split=spec.split, revision=spec.revision)
    except UsageError:
        raise
    except FileNotFoundError as exc:
        raise UsageError(f"{spec.path}: dataset not found ({exc})") from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{spec.path}: cannot load dataset ({first})") from None


def with_example_ids(ds, source: str, split: str, id_column: str | None = None):
    """Add `example_id` (int64): the dataset's integer id column, else a stable hash.

    Hashes take (source, split, id) for a string id column and (source, split, row) when
    there is no id column, so ids are stable across runs and settings and distinct between
    sources. Duplicate ids are an error.
    """
    if id_column is None:
        id_column = next((c for c in (ID_COLUMN, "id", "idx", "guid") if c in ds.column_names), None)
    elif id_column not in ds.column_names:
        raise UsageError(f"{source}: no id column {id_column!r} (columns: {', '.join(ds.column_names)})")
    if id_column is not None:
        raw = ds[id_column]
        ids = as_integer_ids(raw)
        if ids is None:
            ids = stable_ids(raw, source, split)
    else:
        ids = stable_ids(range(len(ds)), source, split, "row")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = uniq[counts > 1][0]
        raise UsageError(f"{source}: example id {dup} occurs {counts[counts > 1][0]} times in split {split!r}")
    if ID_COLUMN in ds.column_names:
        ds = ds.remove_columns(ID_COLUMN)
    return ds.add_column(ID_COLUMN, ids.tolist())


def label_names_of(ds, label_column: str, given: Sequence[str] | None = None) -> list[str]:
    """Label names: given ones, a ClassLabel's names, or the sorted distinct values."""
    from datasets import ClassLabel

    if label_column not in ds.column_names:
        raise UsageError(f"no label column {label_column!r} (columns: {', '.join(ds.column_names)})")
    if given:
        return [str(x) for x in given]
    feature = ds.features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = sorted({v for v in ds[label_column]}, key=lambda v: (str(type(v)), v))
    return [str(v) for v in values]


def encode_labels(ds, label_column: str, label_names: Sequence[str], source: str):
    """Add `labels` (int) from the label column, checking every value against label_names."""
    from datasets import ClassLabel

    feature = ds.features[label_column]
    raw = ds[label_column]
    index = {name: i for i, name in enumerate(label_names)}
    if isinstance(feature, ClassLabel):
        raw = [feature.names[v] for v in raw]
    labels = []
    for row, v in enumerate(raw):
        key = str(v)
        if key not in index:
            raise UsageError(f"{source}: row {row}: label {v!r} is not one of {', '.join(label_names)}")
        labels.append(index[key])
    # The original column goes: collators turn a "label" column into "labels" too, and a
    # string label would break batching.
    ds = ds.remove_columns([c for c in {label_column, "labels"} if c in ds.column_names])
    return ds.add_column("labels", labels)


def tokenize(ds, tokenizer, text_column: str, text_pair_column: str | None, max_length: int, source: str):
    """Tokenize one text or a text pair, truncating to max_length and padding nothing."""
    for col in [text_column, text_pair_column]:
        if col is not None and col not in ds.column_names:
            raise UsageError(f"{source}: no text column {col!r} (columns: {', '.join(ds.column_names)})")

    def encode(batch):
        first = [str(t) for t in batch[text_column]]
        second = [str(t) for t in batch[text_pair_column]] if text_pair_column else None
        return tokenizer(first, second, truncation=True, max_length=max_length)

    return ds.map(encode, batched=True, desc=f"tokenizing {source}")


def prepare(ds, tokenizer, *, source: str, split: str, text_column: str, text_pair_column: str | None,
            label_column: str, label_names: Sequence[str], max_length: int, id_column: str | None = None):  # fmt: skip
    """ids + labels + tokens: what the trainer and the recorder need."""
    ds = with_example_ids(ds, source, split, id_column)
    ds = encode_labels(ds, label_column, label_names, source)
    return tokenize(ds, tokenizer, text_column, text_pair_column, max_length, source)
