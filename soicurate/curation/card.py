"""The dataset card (README.md) of a curated subset, built with huggingface_hub's DatasetCard.

The YAML metadata carries what a machine needs (source dataset and revision, the selection
rule, counts per category, region and label, the runs that produced the dynamics, the tool
version, the inherited license); the body says the same for a person, with a counts table,
how to load the subset and what to cite. No token, user name or absolute local path is
written into a card.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES

SOURCE_KEYS = ("dataset", "kind", "split", "config", "revision", "fingerprint", "num_rows")
# Replaced by the repository id when the card is pushed (soicurate push / curate --push-to).
REPO_PLACEHOLDER = "<namespace>/<dataset-name>"
TAGS = ["soicurate", "training-dynamics", "subsets-of-interest", "dataset-cartography", "data-curation"]
SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]  # fmt: skip
UNKNOWN_LICENSE_NOTE = (
    "The source dataset's license could not be determined (neither its dataset info nor its dataset card "
    "names one). This subset is a selection of the source's rows and is bound by the source's terms: "
    "check them before you share or use it."
)

CATEGORY_MEANING = {
    "always_correct": "correct at every recorded epoch",
    "learned_early": "learned before the late window and never forgotten",
    "learned_late": "first learned inside the late window, never forgotten",
    "forgettable": "forgotten at least once, correct at the last epoch",
    "forgotten": "forgotten at least once, wrong at the last epoch",
    "unlearned": "never predicted correctly",
}
REGION_MEANING = {
    "easy_to_learn": "confident and stable",
    "ambiguous": "highly variable confidence",
    "hard_to_learn": "low confidence, low variability",
}

CITATIONS = """\
- **Subsets of Interest**: Vassef, Dabiriaghdam, Bakhtiari and Yaghoobzadeh, MRL 2025,
  [arXiv:2507.15236](https://arxiv.org/abs/2507.15236) (the six learning-behaviour categories
  and two-stage fine-tuning on an SOI-selected subset).
- **Dataset Cartography**: Swayamdipta, Schwartz, Lourie, Wang, Hajishirzi, Smith and Choi,
  "Dataset Cartography: Mapping and Diagnosing Datasets with Training Dynamics", EMNLP 2020,
  [arXiv:2009.10795](https://arxiv.org/abs/2009.10795) (confidence, variability, regions).
- **Example forgetting**: Toneva et al., ICLR 2019,
  [arXiv:1812.05159](https://arxiv.org/abs/1812.05159) (forgetting events).
- The source dataset, as its own card asks."""


def size_category(n: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1B"


def license_fields(license: str | None) -> dict:
    """Card YAML for a license text: a Hub license id as it is, free text as 'other' + name."""
    if not license:
        return {"license": "unknown"}
    text = str(license).strip()
    if text and all(ch.isalnum() or ch in "-._+" for ch in text):
        return {"license": text.lower()}
    return {"license": "other", "license_name": "source-dataset-license", "license_details": text}


def build_card(
    *,
    selection,
    source: dict,
    label_names: Sequence[str] | None,
    profile_meta: dict,
    license: str | None,
    license_source: str | None,
    version: str,
    pretty_name: str | None = None,
    local_name: str = "curated",
    extra_counts: dict | None = None,
):
    """A huggingface_hub.DatasetCard for a curated subset.

    `selection` is a curation.selection.Selection; `source` describes the source dataset
    (dataset, kind, split, config, revision, fingerprint, num_rows); `profile_meta` is the
    profile's `soicurate.profile` metadata.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from soicurate.curation.selection import counts

    rows = selection.rows
    n, total = rows.height, selection.profile_rows
    cat_counts = counts(rows, "category", CATEGORIES)
    region_counts = counts(rows, "region", REGIONS)
    label_counts = counts(rows, "label_name", label_names) if "label_name" in rows.columns else counts(rows, "label")
    groups = {g: counts(rows, g) for g in (profile_meta.get("group_columns") or []) if g in rows.columns}
    runs = [_public_run(r) for r in profile_meta.get("runs") or []]
    models = sorted({str(r.get("model")) for r in runs if r.get("model")})
    name = pretty_name or _default_name(source, selection)

    meta = {
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {k: source.get(k) for k in SOURCE_KEYS},
        "selection": {
            "rule": selection.rule.describe(),
            "options": selection.rule.to_dict(),
            "steps": selection.steps,
            "selected": n,
            "profile_examples": total,
        },
        "counts": {"total": n, "category": cat_counts, "region": region_counts, "label": label_counts},
        "dynamics": {
            "runs": runs,
            "models": models,
            "late_fraction": profile_meta.get("late_fraction"),
            "region_thresholds": profile_meta.get("region_thresholds"),
        },
        "license_source": license_source or "unknown",
    }
    if groups:
        meta["counts"]["groups"] = groups
    if extra_counts:
        meta["counts"].update(extra_counts)
    lic = license_fields(license)
    if lic["license"] == "unknown":
        meta["license_note"] = UNKNOWN_LICENSE_NOTE

    data = DatasetCardData(
        pretty_name=name,
        task_categories=["text-classification"],
        size_categories=[size_category(n)],
        source_datasets=[source["dataset"]] if source.get("kind") == "hub" else None,
        tags=list(TAGS),
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.parquet"}]}],
        soicurate=meta,
        **lic,
    )
    body = _body(name=name, n=n, total=total, source=source, selection=selection, cat_counts=cat_counts,
                 region_counts=region_counts, label_counts=label_counts, groups=groups, runs=runs, models=models,
                 profile_meta=profile_meta, license=lic, license_source=license_source, version=version,
                 local_name=local_name)  # fmt: skip
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _public_run(run: dict) -> dict:
    """A run's provenance without its local directory (no user paths in a shareable card)."""
    return {k: run.get(k) for k in ("run_id", "seed", "model", "epochs", "recorded_by") if k in run}


def _default_name(source: dict, selection) -> str:
    picked = selection.rule.categories + selection.rule.regions
    what = " + ".join(picked) if picked else "curated"
    return f"{source.get('dataset_name') or source.get('dataset')} ({what} subset)"


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.1f}%" if n else "-"


def _md(text) -> str:
    return str(text).replace("|", "\\|")


def _body(*, name, n, total, source, selection, cat_counts, region_counts, label_counts, groups, runs, models,
          profile_meta, license, license_source, version, local_name) -> str:  # fmt: skip
    src = f"`{source['dataset']}`" + (f" (config `{source['config']}`)" if source.get("config") else "")
    model_text = ", ".join(f"`{m}`" for m in models) if models else "an unrecorded model"
    out = [f"# {name}", ""]
    out.append(
        f"A subset of {n} of the {total} profiled training examples of {src}, split `{source['split']}`, chosen "
        f"by how a fine-tuned classifier learned them. The training dynamics come from {len(runs) or 'unknown'} "
        f"run(s) of {model_text}; soicurate {version} profiled them into "
        "Subsets of Interest (SOI) and Dataset Cartography regions and selected the rows below."
    )
    if any(r.get("recorded_by") == "synthetic" for r in runs):
        out += ["", "**Note: the dynamics are synthetic** (generated for a demonstration, no model was trained)."]
    out += ["", "## How it was chosen", "", f"Selection rule: `{selection.rule.describe()}`", ""]
    steps = [(s["step"], _md(s["rule"]), s["remaining"]) for s in selection.steps]
    out.append(_table(["step", "rule", "examples left"], steps))
    out += [
        "",
        "Category and region picks are a union; quantile picks (`--top`/`--bottom`, computed over the whole "
        "profile), the SQL filter and the agreement threshold then narrow it; label balancing and the random "
        "cap come last.",
    ]
    for w in selection.warnings:
        out += ["", f"Note: {w}."]
    out += ["", "## What is in it", ""]
    out.append(_table(["Subset of Interest", "meaning", "examples", "share"],
                      [(c, CATEGORY_MEANING.get(c, ""), k, _pct(k, n)) for c, k in cat_counts.items()]))  # fmt: skip
    out += [""]
    out.append(_table(["cartography region", "meaning", "examples", "share"],
                      [(r, REGION_MEANING.get(r, ""), k, _pct(k, n)) for r, k in region_counts.items()]))  # fmt: skip
    out += [""]
    out.append(_table(["label", "examples", "share"], [(_md(lab), k, _pct(k, n)) for lab, k in label_counts.items()]))
    for g, gc in groups.items():
        out += ["", _table([_md(g), "examples", "share"], [(_md(v), k, _pct(k, n)) for v, k in gc.items()])]
    out += [
        "",
        "Every row is a row of the source dataset, unchanged, plus `example_id`: the stable id soicurate's "
        "trainer gave it (the source's integer id column, else a hash of source, split and id or row), which "
        "joins it to the profile and to other runs.",
        "",
        "## Training dynamics",
        "",
    ]
    if runs:
        out.append(_table(["run", "seed", "model", "epochs", "recorded by"],
                          [(_md(r.get("run_id")), r.get("seed"), _md(r.get("model")), len(r.get("epochs") or []),
                            r.get("recorded_by")) for r in runs]))  # fmt: skip
    else:
        out.append("The profile did not record which runs it was made from.")
    thr = profile_meta.get("region_thresholds") or {}
    if thr:
        out += [
            "",
            f"Regions: `{thr.get('mode')}` thresholds, ambiguous when variability >= {_num(thr.get('variability'))}, "
            f"otherwise hard_to_learn when confidence < {_num(thr.get('confidence'))}. Late window for "
            f"learned_late: the last {_num(profile_meta.get('late_fraction'))} of the epochs.",
        ]
    out += [
        "",
        "## How to use it",
        "",
        "```python",
        "from datasets import load_dataset, load_from_disk",
        "",
        f'ds = load_dataset("{REPO_PLACEHOLDER}", split="train")       # from the Hub',
        f'ds = load_from_disk("{local_name}/dataset")["train"]      # from the curated folder',
        "```",
        "",
        "Any other trainer can take the plain id list (`ids.txt` in the curated folder, `soicurate/ids.txt` on the "
        "Hub: one `example_id` per line); `selection.parquet` (`soicurate/selection.parquet` on the Hub) holds "
        "the selected examples' profile rows (statistics, category, region). With soicurate's trainer:",
        "",
        "```bash",
        f"soicurate train --model MODEL --train {local_name}/dataset ...",
        "```",
        "",
        "## License",
        "",
    ]
    if license["license"] == "unknown":
        out.append(UNKNOWN_LICENSE_NOTE)
    else:
        lic = license.get("license_details") or license["license"]
        out.append(f"Inherited from the source dataset ({license_source}): `{_md(lic)}`. The subset is a selection "
                   "of the source's rows and is bound by the same terms.")  # fmt: skip
    out += ["", "## Citation", "", "If you use this subset, please cite the methods it rests on:", "", CITATIONS, ""]
    return "\n".join(out)


def _num(x) -> str:
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return "unknown"


def card_for_repo(text: str, repo_id: str) -> str:
    """The card text with the load example pointing at `repo_id`."""
    return text.replace(REPO_PLACEHOLDER, repo_id)


def front_matter(text: str) -> dict:
    """The YAML metadata of a card text, parsed with yaml.safe_load."""
    import re

    import yaml

    match = re.match(r"^\s*---[\r\n]+([\S\s]*?)[\r\n]+---(\r\n|\n|$)", text)
    return (yaml.safe_load(match.group(1)) or {}) if match else {}
