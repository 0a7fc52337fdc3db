"""Curate: choose examples of a profile by their training dynamics, join them back to the source
dataset and write them as a Hugging Face dataset with a dataset card (and push it to the Hub).

    from soicurate.curation import curate

    subset = curate("profile.parquet", "data/train.csv", categories=["forgettable", "forgotten"],
                    regions=["ambiguous"], output_dir="curated/hard")

See docs/curate.md for how the selection options combine and what the curated folder holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from soicurate.errors import UsageError

__all__ = ["CurationResult", "SelectionRule", "curate", "run_curation", "select", "push_curated"]


def __getattr__(name):
    if name in ("SelectionRule", "select"):
        from soicurate.curation import selection

        return getattr(selection, name)
    if name == "push_curated":
        from soicurate.curation.hub import push_curated

        return push_curated
    raise AttributeError(f"module 'soicurate.curation' has no attribute {name!r}")


@dataclass
class CurationResult:
    """What a curation produced: the subset, the chosen profile rows, the card, where it went."""

    dataset: object  # datasets.Dataset
    selection: object  # curation.selection.Selection
    source: dict
    card: object | None = None  # huggingface_hub.DatasetCard
    paths: dict = field(default_factory=dict)
    push: dict | None = None

    def summary(self) -> dict:
        from soicurate.curation.card import front_matter

        meta = front_matter(str(self.card)).get("soicurate", {}) if self.card is not None else {}
        return {
            "selected": len(self.selection),
            "profile_examples": self.selection.profile_rows,
            "rule": self.selection.rule.describe(),
            "steps": self.selection.steps,
            "counts": meta.get("counts", {}),
            "source": {k: v for k, v in self.source.items() if k != "dataset_name"},
            "warnings": self.selection.warnings,
            "outputs": self.paths,
            "push": self.push,
        }


def _read_profile(profile):
    """(DataFrame, metadata, name) from a profile path or a polars DataFrame."""
    import polars as pl

    if isinstance(profile, pl.DataFrame):
        from soicurate.profiling.regions import REGIONS
        from soicurate.profiling.soi import CATEGORIES

        df = profile
        for col, names in (("category", CATEGORIES), ("region", REGIONS)):
            if col in df.columns and not isinstance(df.schema[col], pl.Enum):
                bad = sorted(set(df[col].cast(pl.String).drop_nulls().to_list()) - set(names))
                if bad:
                    raise UsageError(f"profile: unknown {col} value(s) {', '.join(bad)}")
                df = df.with_columns(pl.col(col).cast(pl.Enum(names)))
        return df, {}, "profile"
    from soicurate.profiling.pipeline import read_profile
    from soicurate.reporting.datamap import profile_metadata

    df = read_profile(profile)
    return df, profile_metadata(profile), Path(profile).name


def run_curation(
    profile,
    dataset,
    *,
    split: str = "train",
    id_column: str | None = None,
    categories: Sequence[str] = (),
    regions: Sequence[str] = (),
    top: Sequence = (),
    bottom: Sequence = (),
    where: str | None = None,
    min_agreement: float | None = None,
    balance_labels: bool = False,
    max_examples: int | None = None,
    seed: int = 0,
    output_dir=None,
    overwrite: bool = False,
    pretty_name: str | None = None,
    push_to: str | None = None,
    private: bool | None = None,
    token_env: str | None = None,
    source_name: str | None = None,
    profile_metadata: dict | None = None,
    progress: bool = False,
) -> CurationResult:
    """Select, join, and (with `output_dir`) write and (with `push_to`) push; see `curate`."""
    from soicurate import __version__
    from soicurate.curation import writer
    from soicurate.curation.card import build_card
    from soicurate.curation.selection import SelectionRule, select

    # Everything that can fail on bad input fails before anything is written.
    rule = SelectionRule(categories=list(categories), regions=list(regions), top=list(top), bottom=list(bottom),
                         where=where, min_agreement=min_agreement, balance_labels=balance_labels,
                         max_examples=max_examples, seed=seed)  # fmt: skip
    if push_to is not None and output_dir is None:
        raise UsageError("pushing needs an output directory to write the curated folder first")
    token = None
    if push_to is not None:
        from soicurate.curation.hub import check_repo_id, resolve_token

        check_repo_id(push_to)
        token = resolve_token(token_env)
    if output_dir is not None and Path(output_dir).exists() and not overwrite:
        raise UsageError(f"{output_dir}: already exists (pass --overwrite to replace it)")
    df, meta, _ = _read_profile(profile)
    meta = {**meta, **(profile_metadata or {})}
    selection = select(df, rule)
    if output_dir is not None and len(selection) == 0:
        raise UsageError(
            f"the selection `{rule.describe()}` keeps none of the profile's {df.height} examples; nothing written"
        )
    with writer.quiet_progress(not progress):
        source = writer.load_source(dataset, split, id_column, source_name=source_name)
    writer.check_ids(df["example_id"].to_numpy(), writer.dataset_ids(source), source.info)
    subset = writer.join(source, selection.ids)
    label_names = meta.get("label_names")
    if not label_names and "label_name" in df.columns:
        label_names = [n for _, n in sorted(set(zip(df["label"].to_list(), df["label_name"].to_list())))]
    local_name = Path(output_dir).name if output_dir is not None else "curated"
    card = build_card(selection=selection, source=source.info, label_names=label_names, profile_meta=meta,
                      license=source.license, license_source=source.license_source, version=__version__,
                      pretty_name=pretty_name, local_name=local_name)  # fmt: skip
    subset.info.license = source.license or subset.info.license
    subset.info.description = f"soicurate subset of {source.info['dataset']} ({rule.describe()})"
    result = CurationResult(dataset=subset, selection=selection, source=source.info, card=card)
    if output_dir is not None:
        result.paths = writer.write_curated(output_dir, subset=subset, selection=selection, card=card,
                                            profile_meta=meta, overwrite=overwrite, progress=progress)  # fmt: skip
    if push_to is not None:
        from soicurate.curation.hub import HubError, push_curated
        from soicurate.errors import SoicurateError

        try:
            result.push = push_curated(output_dir, push_to, private=private, token=token, progress=progress)
        except SoicurateError as exc:
            raise HubError(f"{exc} (the curated folder {output_dir} was written; push it again with "
                            f"`soicurate push {output_dir} {push_to}`)") from None  # fmt: skip
    return result


def curate(profile, dataset, **options):
    """Choose examples of `profile` (a profile Parquet path or DataFrame) and return them as rows
    of `dataset` (a datasets.Dataset).

    `dataset` is what the profiled run trained on, given as `soicurate train --train` takes
    it: a Hub name ('name', 'name[config]:split'), a save_to_disk directory or a CSV/JSON/
    Parquet file (or a datasets.Dataset). Options: split, id_column, categories, regions,
    top/bottom (e.g. "variability:0.33"), where (SQL), min_agreement, balance_labels,
    max_examples, seed; output_dir (write the curated folder, atomically), overwrite,
    pretty_name, push_to (a Hub repository id), private, token_env. Nothing is written unless
    output_dir is given.
    """
    return run_curation(profile, dataset, **options).dataset
