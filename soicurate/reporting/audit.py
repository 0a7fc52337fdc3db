"""`soicurate audit`: one self-contained HTML report (plus a Markdown summary and the issue
tables) that a person reads and looks at.

    from soicurate.reporting.audit import audit
    report = audit("profile.parquet", "audit/", dataset="train.csv", compare="multi.parquet")
    report.files["html"]            # audit/report.html
    report.issues.issues            # flagged likely label problems (polars), ranked

The report holds: the category shares overall and per label/source/task/language; the
interactive data map; likely label problems found from the dynamics alone (ranked, with text
when a dataset is given); the examples forgotten most; per-seed agreement when the profile
came from several runs; and the SOI transition heatmap when a second profile is given. Every
table is capped (top rows and a count of the rest), so a profile of 10^6 examples gives a
report of about a megabyte, built in seconds.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soicurate.errors import UsageError
from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES
from soicurate.reporting import html as H

K = len(CATEGORIES)
GROUP_COLUMNS = ("source", "task", "language")
TEXT_CANDIDATES = ("text", "sentence", "sentence1", "premise", "question", "content", "review", "document", "tweet")
PAIR_CANDIDATES = ("sentence2", "hypothesis", "passage", "context")
DEFAULT_TOP = 50
TEXT_CHARS_TABLE = 400


@dataclass
class AuditReport:
    """What `audit` wrote and computed."""

    out_dir: Path
    files: dict[str, Path]
    summary: dict
    issues: object | None = None  # LabelIssues
    transitions: object | None = None  # TransitionResult
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- inputs -------------------------------------------------------------------------------------
def load_texts(dataset: str, *, split: str = "train", id_column: str | None = None, text_column: str | None = None,
               text_pair_column: str | None = None):  # fmt: skip
    """(DataFrame example_id + text, text column used) from a dataset file, save_to_disk
    directory or Hub name, with the example ids soicurate's trainer gives (with_example_ids).

    An integer id column is used as it is (read with polars for files: 10^6 rows in a second);
    string ids or no id column go through with_example_ids so the hashes match the trainer's.
    """
    import polars as pl

    from soicurate.training.data import ID_COLUMN, DataSpec, load_split, with_example_ids

    spec = DataSpec.parse(dataset, default_split=split)
    df = _read_table_fast(Path(spec.path))
    ds = None
    if df is None:
        ds = load_split(spec)
        cols = ds.column_names
    else:
        cols = df.columns
    if text_column is None:
        text_column = next((c for c in TEXT_CANDIDATES if c in cols), None)
        if text_column is None:
            raise UsageError(
                f"{dataset}: no text column found (looked for {', '.join(TEXT_CANDIDATES)}); name it with --text-column"
            )
        if text_pair_column is None:
            text_pair_column = next((c for c in PAIR_CANDIDATES if c in cols and c != text_column), None)
    for c in (text_column, text_pair_column):
        if c is not None and c not in cols:
            raise UsageError(f"{dataset}: no column {c!r} (columns: {', '.join(cols)})")
    if id_column is not None and id_column not in cols:
        raise UsageError(f"{dataset}: no id column {id_column!r} (columns: {', '.join(cols)})")
    id_col = id_column or next((c for c in (ID_COLUMN, "id", "idx", "guid") if c in cols), None)
    keep = [text_column] + ([text_pair_column] if text_pair_column else [])
    if df is not None and id_col is not None and df.schema[id_col].is_integer():
        df = df.select(pl.col(id_col).cast(pl.Int64).alias("example_id"), *keep)
        dup = df.filter(pl.col("example_id").is_duplicated())
        if dup.height:
            raise UsageError(f"{dataset}: example id {dup['example_id'][0]} occurs more than once")
    else:
        if ds is None:
            ds = load_split(spec)
        ds = with_example_ids(ds, spec.name, spec.split, id_column)
        df = pl.from_arrow(ds.select_columns(["example_id", *keep]).data.table.select(["example_id", *keep]))
    text = pl.col(text_column).cast(pl.String)
    if text_pair_column:
        text = pl.concat_str([text, pl.col(text_pair_column).cast(pl.String)], separator=" \u2016 ")
    used = text_column + (f" + {text_pair_column}" if text_pair_column else "")
    return df.select(pl.col("example_id").cast(pl.Int64), text.alias("text")), used


def _read_table_fast(path: Path):
    """A CSV/TSV/JSONL/Parquet file read with polars, or None (other inputs, or polars fails)."""
    import polars as pl

    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10000)
        if suffix == ".jsonl":
            return pl.read_ndjson(path)
    except Exception:
        return None  # datasets' loaders give the user-facing error
    return None


# -- tables -------------------------------------------------------------------------------------
def category_counts(df, by: str | None = None, *, top: int | None = None) -> tuple[list[dict], int]:
    """Rows {group, <category>: count and share, total} (largest groups first, at most `top`
    when given) and the number of groups in all."""
    import polars as pl

    if by is None:
        counts = np.bincount(df["category"].to_physical().to_numpy().astype(np.int64), minlength=K)
        return [_count_row("all", counts)], 1
    g = df.group_by(
        pl.col(by).cast(pl.String).fill_null("(missing)").alias("g"), pl.col("category").to_physical().alias("c")
    ).len()
    totals = g.group_by("g").agg(pl.col("len").sum().alias("t")).sort(["t", "g"], descending=[True, False])
    n_groups = totals.height
    keep = (totals if top is None else totals.head(top))["g"].to_list()
    rows = []
    sub = g.filter(pl.col("g").is_in(keep))
    lookup: dict[str, np.ndarray] = {k: np.zeros(K, np.int64) for k in keep}
    for gv, c, n in sub.iter_rows():
        lookup[gv][int(c)] = n
    for k in keep:
        rows.append(_count_row(k, lookup[k]))
    return rows, n_groups


def _count_row(name, counts) -> dict:
    total = int(np.sum(counts))
    row = {"group": name, "total": total}
    for i, c in enumerate(CATEGORIES):
        row[c] = int(counts[i])
        row[f"{c}_share"] = counts[i] / total if total else math.nan
    return row


def group_columns(df, meta: dict) -> list[str]:
    cols = [c for c in meta.get("group_columns") or [] if c in df.columns]
    cols += [c for c in GROUP_COLUMNS if c in df.columns and c not in cols]
    return cols


def _nan_if_none(value) -> float:
    return math.nan if value is None else float(value)


def seed_agreement(df, *, top: int = DEFAULT_TOP) -> dict | None:
    """Per-seed agreement of a multi-run profile: per category, the pooled seed-vs-seed
    matrix and the examples the runs disagree on most. None for a single-run profile."""
    import polars as pl

    if "category_agreement" not in df.columns or "run_categories" not in df.columns:
        return None
    from soicurate.profiling.agreement import agreement_stats, category_codes, category_counts, pair_counts

    codes, _ = category_codes(df["run_categories"], CATEGORIES)
    R = codes.shape[1]
    pair = pair_counts(category_counts(codes, K))
    stats = agreement_stats(df["run_categories"], CATEGORIES)
    agreement = df["category_agreement"].to_numpy()
    cats = df["category"].to_physical().to_numpy().astype(np.int64)
    per_cat = []
    for k, name in enumerate(CATEGORIES):
        mask = cats == k
        n = int(mask.sum())
        per_cat.append({
            "category": name, "count": n,
            "mean_agreement": float(agreement[mask].mean()) if n else math.nan,
            "unanimous_share": float((agreement[mask] >= 1 - 1e-12).mean()) if n else math.nan,
            "reproduced": _nan_if_none(stats["per_category"][name]["reproduced"]),
            "stable": stats["per_category"][name]["unanimous"],
        })  # fmt: skip
    unanimous = float((agreement >= 1 - 1e-12).mean()) if len(agreement) else math.nan
    by, desc = ["category_agreement", "confidence_std", "example_id"], [False, True, False]
    lowest = (
        df.top_k(top, by=by, reverse=[not d for d in desc])
        .sort(by, descending=desc)
        .with_columns(pl.col("run_categories").cast(pl.Array(pl.String, R)).arr.join(", ").alias("run_categories"))
    )
    return {"runs": R, "unanimous_share": unanimous, "mean_agreement": float(agreement.mean()) if len(agreement) else math.nan,
            "disagreeing": int((agreement < 1 - 1e-12).sum()),
            "per_category": per_cat, "pair_matrix": pair, "lowest": lowest}  # fmt: skip


# -- the report ---------------------------------------------------------------------------------
def audit(
    profile: str | Path,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    split: str = "train",
    id_column: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    compare: str | Path | None = None,
    runs=None,
    threshold: float | None = None,
    top: int = DEFAULT_TOP,
    max_points: int = H.DEFAULT_MAP_POINTS,
    title: str | None = None,
    progress: bool = False,
) -> AuditReport:
    """Write the audit of `profile` into `out_dir` (report.html, summary.md, audit.json,
    label_issues.csv/.parquet, label_scores.parquet, transitions.png with `compare`)."""
    import polars as pl

    from soicurate.atomic import atomic_path, write_text_atomic
    from soicurate.profiling.pipeline import read_profile
    from soicurate.reporting.datamap import profile_metadata
    from soicurate.reporting.label_issues import DEFAULT_THRESHOLD, find_label_issues, profile_runs

    t0 = time.perf_counter()
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if top < 1:
        raise UsageError(f"top must be at least 1, got {top}")
    profile = Path(profile)
    df = read_profile(profile)
    meta = profile_metadata(profile)
    if df.height == 0:
        raise UsageError(f"{profile}: the profile has no examples")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a directory")
    warnings: list[str] = []
    label_names = list(meta.get("label_names") or [])
    if not label_names and "label_name" in df.columns:
        label_names = sorted(set(df["label_name"].drop_nulls().to_list()))
    groups = group_columns(df, meta)
    run_info = meta.get("runs") or []

    # compare (first: a bad second profile fails before any long work)
    transitions = None
    if compare is not None:
        from soicurate.reporting.transitions import compare_profiles

        transitions = compare_profiles(df, compare, name_a=str(profile))

    # texts
    texts, text_used, matched = None, None, None
    if dataset is not None:
        texts, text_used = load_texts(dataset, split=split, id_column=id_column, text_column=text_column,
                                      text_pair_column=text_pair_column)  # fmt: skip
        matched = int(df.select("example_id").join(texts.select("example_id"), on="example_id", how="semi").height)
        if matched == 0:
            warnings.append(
                f"no example of the profile is in {dataset} (split {split!r}): the example ids do not match "
                "(check --split and --id-column); no text is shown"
            )
            texts = None
        elif matched < df.height:
            warnings.append(
                f"{df.height - matched:,} of {df.height:,} profile examples are not in {dataset}: shown without text"
            )

    # label issues (needs the runs' per-epoch predictions)
    issues = None
    try:
        issues = find_label_issues(df, runs if runs else profile_runs(profile), threshold=threshold,
                                   label_names=label_names or None, progress=progress)  # fmt: skip
        if issues.missing:
            warnings.append(f"{issues.missing:,} profile examples are not in the runs: no label score for them")
    except UsageError as exc:
        if runs:
            raise
        warnings.append(f"label problems not scored: {exc}")

    # -- numbers
    overall, _ = category_counts(df)
    by_label, n_labels = category_counts(df, "label_name" if "label_name" in df.columns else "label")
    by_group = {g: category_counts(df, g) for g in groups}
    region_counts = np.bincount(df["region"].to_physical().to_numpy().astype(np.int64), minlength=len(REGIONS))
    thresholds = meta.get("region_thresholds") or {}
    seeds = seed_agreement(df, top=top)
    forgot = df.filter(pl.col("forgetting_events") > 0)
    n_forgot = forgot.height
    by, desc = ["forgetting_events", "confidence", "example_id"], [True, False, False]
    forgot_top = forgot.top_k(top, by=by, reverse=[not d for d in desc]).sort(by, descending=desc)
    if texts is not None:
        forgot_top = forgot_top.join(texts, on="example_id", how="left", maintain_order="left")
        if seeds is not None:
            seeds["lowest"] = seeds["lowest"].join(texts, on="example_id", how="left", maintain_order="left")

    out_dir.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves nothing behind
    files: dict[str, Path] = {}
    issue_top = None
    if issues is not None:
        table = issues.issues
        if texts is not None:
            table = table.join(texts, on="example_id", how="left", maintain_order="left")
        csv_cols = [c for c in table.columns if table.schema[c] not in (pl.Object,)]
        files["issues_csv"] = out_dir / "label_issues.csv"
        with atomic_path(files["issues_csv"], ".csv") as tmp:
            table.select(csv_cols).with_columns(pl.col(pl.Enum).cast(pl.String)).write_csv(tmp)
        files["issues_parquet"] = out_dir / "label_issues.parquet"
        with atomic_path(files["issues_parquet"], ".parquet") as tmp:
            table.write_parquet(tmp)
        files["scores_parquet"] = out_dir / "label_scores.parquet"
        with atomic_path(files["scores_parquet"], ".parquet") as tmp:
            issues.scores.write_parquet(tmp)
        issue_top = table.head(top)

    heat_png = None
    if transitions is not None:
        heat_png = transitions.plot(out_dir / "transitions.png")
        files["transitions_png"] = out_dir / "transitions.png"

    map_json = H.map_data(df, thresholds=thresholds, max_points=max_points, texts=texts,
                          issues=issues.scores if issues is not None else None, label_names=label_names)  # fmt: skip

    model = next((r.get("model") for r in run_info if r.get("model")), None)
    title = title or (f"Audit: {model}" if model else f"Audit: {profile.name}")
    summary = {
        "profile": str(profile),
        "title": title,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "examples": df.height,
        "runs": run_info,
        "late_fraction": meta.get("late_fraction"),
        "region_thresholds": thresholds,
        "label_names": label_names,
        "categories": {c: {"count": overall[0][c], "share": overall[0][f"{c}_share"]} for c in CATEGORIES},
        "regions": {
            r: {"count": int(region_counts[i]), "share": region_counts[i] / df.height} for i, r in enumerate(REGIONS)
        },
        "by_label": _strip_shares(by_label),
        "by_group": {g: _strip_shares(rows) for g, (rows, _) in by_group.items()},
        "dataset": None
        if dataset is None
        else {"path": dataset, "split": split, "text_column": text_used, "matched": matched},
        "label_issues": None if issues is None else issues.to_dict(top=min(top, 20)),
        "forgotten": {
            "with_forgetting_events": n_forgot,
            "top": _jsonable(
                forgot_top.head(min(top, 20))
                .select(
                    [
                        c
                        for c in ("example_id", "label_name", "category", "forgetting_events", "confidence")
                        if c in forgot_top.columns
                    ]
                )
                .to_dicts()
            ),
        },  # fmt: skip
        "seeds": None if seeds is None else {k: v for k, v in seeds.items() if k not in ("pair_matrix", "lowest")},
        "transitions": None if transitions is None else transitions.to_dict(),
        "map": {"shown": map_json["n_shown"], "total": map_json["n_total"], "max_points": max_points},
        "warnings": warnings,
    }
    if summary["label_issues"] is not None:
        summary["label_issues"]["top"] = _jsonable(summary["label_issues"]["top"])

    ctx = dict(df=df, meta=meta, profile=profile, title=title, overall=overall, by_label=(by_label, n_labels),
               by_group=by_group, region_counts=region_counts, thresholds=thresholds, issues=issues, issue_top=issue_top,
               forgot_top=forgot_top, n_forgot=n_forgot, seeds=seeds, transitions=transitions, heat_png=heat_png,
               map_json=map_json, warnings=warnings, texts=texts is not None, text_used=text_used, dataset=dataset,
               matched=matched, top=top, label_names=label_names)  # fmt: skip
    files["html"] = out_dir / "report.html"
    write_text_atomic(files["html"], _render_html(ctx))
    files["markdown"] = out_dir / "summary.md"
    write_text_atomic(files["markdown"], _render_markdown(ctx, files))
    files["json"] = out_dir / "audit.json"
    summary["files"] = {k: str(v) for k, v in files.items()}
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    write_text_atomic(files["json"], json.dumps(_jsonable(summary), indent=2))
    return AuditReport(out_dir, files, summary, issues, transitions, warnings, summary["seconds"])


def _strip_shares(rows):
    return [{k: v for k, v in r.items() if not k.endswith("_share")} for r in rows]


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def _short_text(s, n: int = TEXT_CHARS_TABLE):
    if s is None:
        return None
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


# -- HTML ---------------------------------------------------------------------------------------
def _render_html(c: dict) -> str:
    from soicurate import __version__

    df, esc = c["df"], H.esc
    parts = [f"<h1>{esc(c['title'])}</h1>"]
    runs = c["meta"].get("runs") or []
    parts.append(
        f'<p class="sub">{df.height:,} examples \u00b7 {len(runs)} run(s) \u00b7 profile <code>{esc(c["profile"])}</code></p>'
    )
    nav = [("shares", "Subsets of Interest"), ("map", "Data map"), ("labels", "Likely label problems"),
           ("forgotten", "Forgotten most")]  # fmt: skip
    if c["seeds"]:
        nav.append(("seeds", "Seed agreement"))
    if c["transitions"] is not None:
        nav.append(("transitions", "Transitions"))
    nav.append(("about", "About"))
    parts.append("<nav>" + "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in nav) + "</nav>")
    for w in c["warnings"]:
        parts.append(f'<p class="warnbox">{esc(w)}</p>')

    # shares
    parts.append('<h2 id="shares">Subsets of Interest</h2>')
    parts.append(
        '<p class="sub">Each example falls in exactly one of six categories by its correctness over the epochs '
        "(always correct; learned early or late and never forgotten; forgettable or forgotten after a forgetting "
        "event; never learned).</p>"
    )
    parts.append(H.category_legend())
    parts.append(_shares_table([{**c["overall"][0], "group": "all examples"}], "", 1))
    t = c["thresholds"]
    reg = c["region_counts"]
    parts.append("<h3>Cartography regions</h3>")
    parts.append(H.table(
        [{"region": r.replace("_", " "), "count": int(reg[i]), "share": reg[i] / df.height} for i, r in enumerate(REGIONS)],
        [("region", "region"), ("count", "examples", "int"), ("share", "share", "pct")],
    ))  # fmt: skip
    if t.get("variability") is not None:
        parts.append(
            f'<p class="more">ambiguous: variability \u2265 {t["variability"]:.4f}; hard-to-learn: confidence &lt; '
            f"{t['confidence']:.4f} ({esc(t.get('mode'))} thresholds)</p>"
        )
    rows, n = c["by_label"]
    parts.append("<h3>By label</h3>")
    parts.append(_shares_table(rows, "label", n, c["top"]))
    for g, (rows, n) in c["by_group"].items():
        parts.append(f"<h3>By {esc(g)}</h3>")
        parts.append(_shares_table(rows, g, n, c["top"]))

    # map
    parts.append('<h2 id="map">Data map</h2>')
    parts.append(
        '<p class="sub">Each point is an example: how variable (x) and how high (y) the probability of its gold '
        "label was across the epochs. Colours are Subsets of Interest"
        + ("; ringed points are likely label problems" if c["issues"] is not None else "")
        + (f"; hover a point for its text (column {esc(c['text_used'])} of the dataset)" if c["texts"] else "")
        + ".</p>"
    )
    parts.append(H.datamap_fragment(c["map_json"]))

    # label issues
    parts.append('<h2 id="labels">Likely label problems</h2>')
    issues = c["issues"]
    if issues is None:
        parts.append(
            '<p class="note">Not scored: the per-epoch predictions (the run directories) were not available.</p>'
        )
    else:
        n_all = issues.scores.height
        parts.append(
            f"<p><b>{issues.num_issues:,}</b> of {n_all:,} examples ({issues.num_issues / n_all:.1%}) are flagged: in at "
            f"least {issues.min_share:.0%} of the {issues.epochs} recorded epochs the model predicted one and the same "
            f"other label m, and gave it on average at least {issues.threshold:g} of the probability.</p>"
        )
        parts.append(
            '<p class="note"><code>issue_score</code> = the probability of m averaged over all epochs (for two labels: '
            "1 \u2212 Cartography confidence); <code>label_score</code> = 1 \u2212 issue_score (low = likely a label "
            "problem, as in cleanlab); <i>epochs predicting it</i> = how stable the prediction of m is. Ranked by "
            "issue_score."
            + (
                ""
                if issues.exact_probability
                else " With more than two labels the score is a lower bound (the log keeps "
                "the gold and the predicted label's probabilities only)."
            )
            + " Found from training dynamics alone: check before relabelling.</p>"
        )
        top = c["issue_top"]
        rows = []
        for r in top.to_dicts():
            r["text"] = _short_text(r.get("text"))
            r["category"] = str(r.get("category", "")).replace("_", " ")
            rows.append(r)
        cols = [("rank", "#", "int"), ("example_id", "example id", "id"), ("given_label", "given label"),
                ("predicted_label", "predicted"), ("label_score", "label score", "float"),
                ("predicted_share", "epochs predicting it", "pct"), ("predicted_confidence", "its mean probability", "float"),
                ("category", "category")]  # fmt: skip
        if c["texts"]:
            cols.append(("text", "text", "text"))
        parts.append(H.table(rows, cols, total=issues.num_issues, more_note="; all in label_issues.csv / .parquet"))

    # forgotten
    parts.append('<h2 id="forgotten">Examples forgotten most</h2>')
    parts.append(
        f"<p>{c['n_forgot']:,} examples ({c['n_forgot'] / df.height:.1%}) were forgotten at least once (correct at one "
        "epoch, wrong at the next). Those forgotten most often:</p>"
    )
    rows = []
    for r in c["forgot_top"].to_dicts():
        r["text"] = _short_text(r.get("text"))
        r["category"] = str(r.get("category", "")).replace("_", " ")
        rows.append(r)
    cols = [("example_id", "example id", "id"), ("label_name", "label"), ("category", "category"),
            ("forgetting_events", "forgetting events" + (" (mean over runs)" if c["seeds"] else ""), "g"),
            ("correctness", "correct epochs", "pct"), ("confidence", "confidence", "float"),
            ("variability", "variability", "float")]  # fmt: skip
    if c["texts"]:
        cols.append(("text", "text", "text"))
    parts.append(H.table(rows, cols, total=c["n_forgot"]))

    # seeds
    s = c["seeds"]
    if s:
        parts.append('<h2 id="seeds">Seed agreement</h2>')
        parts.append(
            f"<p>The profile combines <b>{s['runs']}</b> runs (seeds) of the same examples; each example's category is "
            f"the modal one. All runs agree on <b>{s['unanimous_share']:.1%}</b> of the examples (mean agreement "
            f"{s['mean_agreement']:.3f}); {s['disagreeing']:,} examples get different categories from different runs.</p>"
        )
        parts.append(H.table(
            [{**r, "category": r["category"].replace("_", " ")} for r in s["per_category"]],
            [("category", "modal category"), ("count", "examples", "int"), ("mean_agreement", "mean agreement", "float"),
             ("unanimous_share", "all runs agree", "pct"), ("stable", "seed-stable examples", "int"),
             ("reproduced", "reproduced by another run", "pct")],
        ))  # fmt: skip
        parts.append(
            "<p><i>Seed-stable examples</i> are those every run puts in the category: the curation candidates that "
            "do not depend on the seed (<code>soicurate curate --min-agreement 1</code>). <i>Reproduced by another "
            "run</i>: when one run puts an example in the category, how often another run does too.</p>"
        )
        parts.append("<h3>Category in one run against another (all pairs of runs pooled)</h3>")
        parts.append(H.heat_table(s["pair_matrix"], CATEGORIES, CATEGORIES, corner="one run \\ another"))
        parts.append("<h3>Examples the runs disagree on most</h3>")
        rows = [{**r, "category": str(r["category"]).replace("_", " ")} for r in s["lowest"].to_dicts()]
        parts.append(H.table(rows, [("example_id", "example id", "id"), ("label_name", "label"),
                                    ("category", "modal category"), ("category_agreement", "agreement", "float"),
                                    ("run_categories", "per run"), ("confidence", "confidence", "float"),
                                    ("confidence_std", "confidence std across runs", "float")]
                             + ([("text", "text", "text")] if c["texts"] else []),
                             total=s["disagreeing"]))  # fmt: skip

    # transitions
    tr = c["transitions"]
    if tr is not None:
        parts.append('<h2 id="transitions">SOI transitions</h2>')
        parts.append(
            f"<p>A: <code>{esc(tr.name_a)}</code> ({tr.n_a:,} examples); B: <code>{esc(tr.name_b)}</code> "
            f"({tr.n_b:,}). Joined on example id: <b>{tr.n_joined:,}</b>; only in A: <b>{tr.n_only_a:,}</b>; only in B: "
            f"<b>{tr.n_only_b:,}</b>. Same category in both: {tr.unchanged_share:.1%}.</p>"
        )
        if tr.label_mismatches:
            parts.append(
                f'<p class="warnbox">{tr.label_mismatches:,} joined examples have a different gold label in A and B.</p>'
            )
        parts.append(H.png_img(c["heat_png"], "SOI transition heatmap", width=760))
        ch = tr.changes.to_dicts()
        for r in ch:
            r["category_a"] = r["category_a"].replace("_", " ")
        parts.append("<h3>Mean confidence and variability by category in A</h3>")
        parts.append(H.table(ch, [("category_a", "category in A"), ("count", "examples", "int"),
                                  ("same_category", "same in B", "int"), ("confidence_a", "confidence A", "float"),
                                  ("confidence_b", "confidence B", "float"), ("delta_confidence", "\u0394", "float"),
                                  ("variability_a", "variability A", "float"), ("variability_b", "variability B", "float"),
                                  ("delta_variability", "\u0394", "float")]))  # fmt: skip
        if tr.n_only_a or tr.n_only_b:
            parts.append("<h3>Examples in one profile only (by their own category)</h3>")
            rows = [{"category": k.replace("_", " "), "a": int(tr.only_a_counts[i]), "b": int(tr.only_b_counts[i])}
                    for i, k in enumerate(CATEGORIES)]  # fmt: skip
            parts.append(
                H.table(rows, [("category", "category"), ("a", "only in A", "int"), ("b", "only in B", "int")])
            )

    # about
    parts.append('<h2 id="about">About this report</h2>')
    kv = [
        ("profile", str(c["profile"])),
        ("late window", f"last {c['meta'].get('late_fraction', 0.25):g} of the epochs"),
    ]
    for i, r in enumerate(runs):
        kv.append((f"run {i + 1}", f"{r.get('run_dir')} \u00b7 model {r.get('model')} \u00b7 seed {r.get('seed')} \u00b7 "
                                   f"epochs {len(r.get('epochs') or [])} \u00b7 recorded by {r.get('recorded_by')}"))  # fmt: skip
    if c["dataset"]:
        kv.append(("dataset", f"{c['dataset']} (text: {c['text_used']}; {c['matched'] or 0:,} examples matched)"))
    parts.append('<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in kv) + "</dl>")
    parts.append(
        f"<footer>soicurate {esc(__version__)} \u00b7 self-contained page: no network request, works offline \u00b7 "
        f"tables show at most {c['top']} rows; the full tables are in the files next to this report.</footer>"
    )
    return H.page(c["title"], "".join(parts), with_map=True)


def _shares_table(rows: list[dict], by: str, n_groups: int, top: int = DEFAULT_TOP) -> str:
    out = []
    for r in rows[:top]:
        row = {"group": r["group"], "total": r["total"], "bar": H.share_bar([r[c] for c in CATEGORIES])}
        for cat in CATEGORIES:
            row[cat] = f"{r[cat]:,} ({H.pct(r[f'{cat}_share'], r[cat])})" if r["total"] else "0"
        out.append(row)
    cols = [("group", by or ""), ("bar", "shares")] + [(cat, cat.replace("_", " "), "right") for cat in CATEGORIES]
    cols.append(("total", "total", "int"))
    return H.table(out, cols, raw=("bar",), total=n_groups, more_note="; all in audit.json", css_class="shares")


# -- Markdown -----------------------------------------------------------------------------------
def _render_markdown(c: dict, files: dict) -> str:
    df = c["df"]
    n = df.height
    L = [
        f"# {c['title']}",
        "",
        f"{n:,} examples, {len(c['meta'].get('runs') or [])} run(s); profile `{c['profile']}`.",
        "",
    ]
    for w in c["warnings"]:
        L.append(f"> **Warning:** {w}")
        L.append("")
    L += ["## Subsets of Interest", "", "| category | examples | share |", "|---|---:|---:|"]
    o = c["overall"][0]
    for cat in CATEGORIES:
        L.append(f"| {cat} | {o[cat]:,} | {o[f'{cat}_share']:.1%} |")
    L.append("")
    reg = c["region_counts"]
    L += ["| region | examples | share |", "|---|---:|---:|"]
    L += [f"| {r} | {int(reg[i]):,} | {reg[i] / n:.1%} |" for i, r in enumerate(REGIONS)]
    L.append("")
    for title, (rows, total) in [("label", c["by_label"]), *[(g, v) for g, v in c["by_group"].items()]]:
        L += [f"### By {title}", "", f"| {title} | " + " | ".join(CATEGORIES) + " | total |",
              "|---|" + "---:|" * (K + 1)]  # fmt: skip
        show = rows[:20]
        for r in show:
            L.append(f"| {r['group']} | " + " | ".join(f"{r[x]:,} ({H.pct(r[f'{x}_share'], r[x])})" for x in CATEGORIES)
                     + f" | {r['total']:,} |")  # fmt: skip
        if total > len(show):
            L.append(f"\n{total - len(show):,} more {title} values not shown.")
        L.append("")
    issues = c["issues"]
    L += ["## Likely label problems", ""]
    if issues is None:
        L += ["Not scored: the run directories were not available.", ""]
    else:
        L += [f"{issues.num_issues:,} of {issues.scores.height:,} examples flagged (issue_score >= {issues.threshold:g}); "
              "all in `label_issues.csv` / `label_issues.parquet`, every example's score in `label_scores.parquet`.", ""]  # fmt: skip
        top = c["issue_top"].head(20)
        has_text = "text" in top.columns
        L += ["| # | example id | given | predicted | label score | category |" + (" text |" if has_text else ""),
              "|---:|---:|---|---|---:|---|" + ("---|" if has_text else "")]  # fmt: skip
        for r in top.to_dicts():
            text = f" {_md(_short_text(r.get('text'), 120))} |" if has_text else ""
            L.append(f"| {r['rank']} | {r['example_id']} | {r['given_label']} | {r['predicted_label']} | "
                     f"{r['label_score']:.3f} | {r['category']} |{text}")  # fmt: skip
        if issues.num_issues > top.height:
            L.append(f"\n{issues.num_issues - top.height:,} more flagged examples not shown.")
        L.append("")
    L += ["## Examples forgotten most", "", f"{c['n_forgot']:,} examples were forgotten at least once.", "",
          "| example id | label | category | forgetting events | confidence |", "|---:|---|---|---:|---:|"]  # fmt: skip
    for r in c["forgot_top"].head(10).to_dicts():
        L.append(
            f"| {r['example_id']} | {r.get('label_name')} | {r['category']} | {r['forgetting_events']:g} | {r['confidence']:.3f} |"
        )
    L.append("")
    s = c["seeds"]
    if s:
        L += ["## Seed agreement", "", f"{s['runs']} runs; all agree on {s['unanimous_share']:.1%} of the examples "
              f"(mean agreement {s['mean_agreement']:.3f}).", "", "| modal category | examples | mean agreement | all agree | seed-stable examples | reproduced by another run |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in s["per_category"]:
            ma = "-" if math.isnan(r["mean_agreement"]) else f"{r['mean_agreement']:.3f}"
            ua = "-" if math.isnan(r["unanimous_share"]) else f"{r['unanimous_share']:.1%}"
            rp = "-" if math.isnan(r["reproduced"]) else f"{r['reproduced']:.1%}"
            L.append(f"| {r['category']} | {r['count']:,} | {ma} | {ua} | {r['stable']:,} | {rp} |")
        L.append("")
    tr = c["transitions"]
    if tr is not None:
        L += ["## SOI transitions", "", f"A: `{tr.name_a}`, B: `{tr.name_b}`. Joined: {tr.n_joined:,}; only in A: "
              f"{tr.n_only_a:,}; only in B: {tr.n_only_b:,}.", "", "![SOI transitions](transitions.png)", "",
              "| A \\ B | " + " | ".join(CATEGORIES) + " | total |", "|---|" + "---:|" * (K + 1)]  # fmt: skip
        shares = tr.share_matrix
        for i, a in enumerate(CATEGORIES):
            cells = [f"{int(tr.matrix[i, j]):,} ({H.pct(shares[i, j], int(tr.matrix[i, j]))})" if tr.row_totals[i] else "-"
                     for j in range(K)]  # fmt: skip
            L.append(f"| {a} | " + " | ".join(cells) + f" | {int(tr.row_totals[i]):,} |")
        L.append("")
    L += ["## Files", ""]
    L += [f"- `{Path(p).name}`" for p in [*files.values(), "audit.json"]]
    L.append("")
    return "\n".join(L)


def _md(s):
    return "" if s is None else str(s).replace("|", "\\|").replace("\n", " ")
