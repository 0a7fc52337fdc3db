"""`soicurate audit`: a self-contained HTML report (and Markdown summary) of a profile."""

from __future__ import annotations

import click


@click.command("audit")
@click.argument("profile", type=click.Path())
@click.option(
    "-o",
    "--output-dir",
    default="audit",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for report.html, summary.md, audit.json and the label-issue tables.",
)
@click.option(
    "--dataset",
    default=None,
    help="The training data (CSV/JSON/Parquet file, save_to_disk directory or Hub name[:split]) "
    "to show each example's text; ids as soicurate's trainer makes them.",
)
@click.option("--split", default="train", show_default=True, help="Split of --dataset.")
@click.option("--id-column", default=None, help="Id column of --dataset (default: example_id, id, idx or guid).")
@click.option("--text-column", default=None, help="Text column of --dataset (default: text, sentence, premise, ...).")
@click.option("--text-pair-column", default=None, help="Second text column (default: hypothesis/sentence2 if present).")
@click.option(
    "--compare",
    "compare_with",
    default=None,
    type=click.Path(),
    help="A second profile of the same examples: adds the SOI transition heatmap.",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    type=click.Path(),
    help="Run directory with the per-epoch predictions (repeatable; default: the runs the profile names).",
)
@click.option(
    "--threshold",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Flag an example as a likely label issue when its issue_score (1 - label_score) is at least this.",
)
@click.option("--top", default=50, show_default=True, type=click.IntRange(1), help="Rows per table in the report.")
@click.option(
    "--max-points",
    default=20_000,
    show_default=True,
    type=click.IntRange(100),
    help="Points in the interactive data map (a uniform sample beyond this).",
)
@click.option("--title", default=None, help="Report title (default: from the run's model).")
@click.option("--json", "as_json", is_flag=True, help="Print the audit summary as JSON on stdout (for scripts).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def audit(profile, output_dir, dataset, split, id_column, text_column, text_pair_column, compare_with, runs, threshold,
          top, max_points, title, as_json, quiet):  # fmt: skip
    """Write an audit report of PROFILE: one HTML page that works offline, plus summary.md.

    The report shows the Subset of Interest shares (overall, per label and per
    source/task/language), the interactive data map (hover for id, label, category and text),
    likely label problems found from the training dynamics alone (examples the model kept
    predicting as one other label, with confidence; ranked, with a flag and a score per
    example as in cleanlab), the examples forgotten most, per-seed agreement for a profile of
    several runs, and the SOI transition heatmap with --compare. The label-issue table is
    also written as label_issues.csv and label_issues.parquet (every example's score in
    label_scores.parquet).

    Label scores read the runs' per-epoch predictions: the run directories the profile was
    made from, or --run.

    \b
    Examples:
      soicurate audit profile.parquet -o audit/
      soicurate audit profile.parquet -o audit/ --dataset data/train.csv --compare multi.parquet
      soicurate audit seeds.parquet -o audit/ --run runs/s0 --run runs/s1 --json
    """
    import json

    from soicurate.reporting.audit import audit as run_audit

    if dataset is not None and (quiet or as_json):
        import datasets

        datasets.disable_progress_bars()

    report = run_audit(profile, output_dir, dataset=dataset, split=split, id_column=id_column, text_column=text_column,
                       text_pair_column=text_pair_column, compare=compare_with, runs=list(runs) or None,
                       threshold=threshold, top=top, max_points=max_points, title=title,
                       progress=not quiet and not as_json)  # fmt: skip
    if as_json:
        click.echo(json.dumps(json.load(open(report.files["json"], encoding="utf-8")), indent=2))
        return
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    if quiet:
        return
    s = report.summary
    click.echo(f"{s['examples']:,} examples audited in {report.seconds:.1f} s")
    li = s.get("label_issues")
    if li:
        click.echo(f"likely label problems: {li['flagged']:,} ({li['flagged_share']:.1%}) flagged")
    if s.get("transitions"):
        t = s["transitions"]
        click.echo(f"transitions: {t['joined']:,} joined, {t['only_in_a']:,} only in A, {t['only_in_b']:,} only in B")
    for key in ("html", "markdown", "issues_csv", "issues_parquet"):
        if key in report.files:
            click.echo(f"wrote {report.files[key]}")
