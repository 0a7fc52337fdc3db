"""Join a selection back to its source dataset and write the curated folder.

The source is loaded exactly as `soicurate train --train` loads it (DataSpec.parse, load_split)
and given the same example ids (with_example_ids), so the profile's ids find their rows.

Curated folder (written atomically: a failure leaves no folder, or the old one)::

    OUT_DIR/README.md            dataset card (YAML metadata + a readable body)
    OUT_DIR/dataset/             DatasetDict({"train": subset}).save_to_disk
    OUT_DIR/data/train.parquet   the same rows as Parquet ...
    OUT_DIR/data/train.jsonl     ... and as JSON Lines
    OUT_DIR/ids.txt              one example_id per line, for any other trainer
    OUT_DIR/selection.parquet    the selected examples' profile rows
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soicurate.errors import UsageError

DATASET_SUBDIR = "dataset"
DATA_SUBDIR = "data"
SPLIT = "train"
CARD_NAME = "README.md"
IDS_NAME = "ids.txt"
SELECTION_NAME = "selection.parquet"
CURATION_METADATA_KEY = b"soicurate.curation"


@dataclass
class Source:
    """A source dataset with example ids, and what the card says about it."""

    dataset: object  # datasets.Dataset with an example_id column
    info: dict = field(default_factory=dict)
    license: str | None = None
    license_source: str | None = None


def load_source(dataset, split: str = "train", id_column: str | None = None, *,
                source_name: str | None = None) -> Source:  # fmt: skip
    """Load a data spec (Hub name, save_to_disk directory or file, as the trainer's --train) or
    take a datasets.Dataset, and add the trainer's example ids."""
    from soicurate.training.data import FILE_BUILDERS, DataSpec, load_split, with_example_ids

    if isinstance(dataset, (str, Path)):
        spec = DataSpec.parse(str(dataset), default_split=split)
        p = Path(spec.path)
        kind = "save_to_disk" if p.is_dir() else "file" if p.is_file() else "hub"
        looks_local = (p.is_absolute() or spec.path.startswith(".") or spec.path.count("/") > 1
                       or p.suffix.lower() in FILE_BUILDERS)  # fmt: skip
        if kind == "hub" and looks_local:
            raise UsageError(f"{spec.path}: dataset not found (no such file or directory)")
        ds = load_split(spec)
        name, split_name = spec.name, spec.split
        info = {"dataset": spec.path if kind == "hub" else p.name, "dataset_name": spec.name, "kind": kind,
                "split": spec.split, "config": spec.config, "revision": spec.revision}  # fmt: skip
    else:
        ds = dataset
        name = source_name or (ds.info.dataset_name if getattr(ds, "info", None) else None) or "dataset"
        split_name = split
        spec = None
        info = {"dataset": name, "dataset_name": name, "kind": "in-memory", "split": split, "config": None,
                "revision": None}  # fmt: skip
    info["fingerprint"] = getattr(ds, "_fingerprint", None)
    info["num_rows"] = len(ds)
    if info["kind"] == "hub":
        info["revision"] = info["revision"] or _hub_revision(spec)
    license, where = _license(ds, spec, info["kind"])
    ds = with_example_ids(ds, name, split_name, id_column)
    return Source(dataset=ds, info=info, license=license, license_source=where)


def _hub_revision(spec) -> str | None:
    """The commit of a Hub dataset, when the Hub can be asked (never in offline mode)."""
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        return HfApi().dataset_info(spec.path, revision=spec.revision, timeout=10).sha
    except Exception:
        return None


def _license(ds, spec, kind: str) -> tuple[str | None, str | None]:
    """The source's license and where it was found: its DatasetInfo, else its dataset card."""
    lic = getattr(getattr(ds, "info", None), "license", None)
    if lic and str(lic).strip():
        return str(lic).strip(), "dataset info"
    card_text = None
    try:
        if kind == "save_to_disk":
            readme = Path(spec.path) / "README.md"
            card_text = readme.read_text(encoding="utf-8") if readme.is_file() else None
        elif kind == "hub":
            from huggingface_hub import DatasetCard

            card_text = DatasetCard.load(spec.path, repo_type="dataset").content
    except Exception:
        card_text = None
    if card_text:
        from soicurate.curation.card import front_matter

        try:
            meta = front_matter(card_text)
        except Exception:
            meta = {}
        lic = meta.get("license")
        if isinstance(lic, list):
            lic = ", ".join(str(x) for x in lic) if lic else None
        if lic and str(lic).strip() and str(lic).strip().lower() != "unknown":
            return str(lic).strip(), "dataset card"
    return None, None


def check_ids(profile_ids: np.ndarray, dataset_ids: np.ndarray, info: dict) -> None:
    """Every profile id must name a row of the source; else one line with the counts."""
    missing = ~np.isin(profile_ids, dataset_ids)
    m = int(missing.sum())
    if m:
        examples = ", ".join(str(int(i)) for i in profile_ids[missing][:3])
        raise UsageError(
            f"{info['dataset']}: {m} of the profile's {len(profile_ids)} example ids are not in split "
            f"{info['split']!r} ({info['num_rows']} rows; e.g. {examples}); give the dataset, --split and "
            "--id-column the profiled run was trained with"
        )


def join(source: Source, ids: np.ndarray):
    """The source rows whose example_id is in `ids`, in the source's row order."""
    ds_ids = dataset_ids(source)
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return source.dataset.select([])
    sorter = np.argsort(ds_ids, kind="stable")
    pos = np.clip(np.searchsorted(ds_ids, ids, sorter=sorter), 0, len(ds_ids) - 1)
    rows = sorter[pos]
    found = ds_ids[rows] == ids
    if not found.all():
        raise UsageError(f"{source.info['dataset']}: example id {int(ids[~found][0])} is not in the dataset")
    return source.dataset.select(np.sort(rows).tolist())


def dataset_ids(source: Source) -> np.ndarray:
    return np.asarray(source.dataset.with_format("numpy")["example_id"], dtype=np.int64)


def write_curated(out_dir, *, subset, selection, card, profile_meta: dict, overwrite: bool = False,
                  progress: bool = False) -> dict:  # fmt: skip
    """Write the curated folder atomically and return the paths written."""
    import os

    import pyarrow.parquet as pq
    from datasets import DatasetDict

    from soicurate.atomic import atomic_directory

    out_dir = Path(out_dir)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp, quiet_progress(not progress):
        DatasetDict({SPLIT: subset}).save_to_disk(str(tmp / DATASET_SUBDIR))
        (tmp / DATA_SUBDIR).mkdir()
        subset.to_parquet(str(tmp / DATA_SUBDIR / f"{SPLIT}.parquet"))
        subset.to_json(str(tmp / DATA_SUBDIR / f"{SPLIT}.jsonl"), lines=True, force_ascii=False)
        ids = selection.rows["example_id"].to_numpy()
        (tmp / IDS_NAME).write_text("".join(f"{int(i)}\n" for i in ids), encoding="utf-8")
        pq.write_table(_selection_table(selection, profile_meta), str(tmp / SELECTION_NAME))
        card.save(str(tmp / CARD_NAME))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a temporary directory is private; the output is an ordinary folder
    return {
        "output_dir": str(out_dir),
        "card": str(out_dir / CARD_NAME),
        "dataset": str(out_dir / DATASET_SUBDIR),
        "parquet": str(out_dir / DATA_SUBDIR / f"{SPLIT}.parquet"),
        "jsonl": str(out_dir / DATA_SUBDIR / f"{SPLIT}.jsonl"),
        "ids": str(out_dir / IDS_NAME),
        "selection": str(out_dir / SELECTION_NAME),
    }


@contextlib.contextmanager
def quiet_progress(enabled: bool = True):
    """Silence datasets' and huggingface_hub's progress bars and info logs for a while."""
    if not enabled:
        yield
        return
    import datasets
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    ds_bars = datasets.is_progress_bar_enabled()
    hub_disabled = are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if ds_bars:
            datasets.enable_progress_bars()
        if not hub_disabled:
            enable_progress_bars()


def _selection_table(selection, profile_meta: dict):
    """The selected profile rows as Arrow (Enums as strings), keeping the profile's metadata so
    that soicurate.read_profile reads it back as a profile."""
    import polars as pl

    from soicurate.profiling.pipeline import PROFILE_METADATA_KEY

    df = selection.rows
    df = df.with_columns([pl.col(c).cast(pl.String) for c, t in df.schema.items() if isinstance(t, pl.Enum)])
    if "run_categories" in df.columns and isinstance(df.schema["run_categories"], pl.Array):
        df = df.with_columns(pl.col("run_categories").cast(pl.Array(pl.String, df.schema["run_categories"].size)))
    table = df.to_arrow()
    meta = dict(table.schema.metadata or {})
    if profile_meta:
        meta[PROFILE_METADATA_KEY] = json.dumps(profile_meta).encode()
    meta[CURATION_METADATA_KEY] = json.dumps(
        {"rule": selection.rule.describe(), "options": selection.rule.to_dict(), "steps": selection.steps}
    ).encode()
    return table.replace_schema_metadata(meta)
