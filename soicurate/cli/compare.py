"""`soicurate compare`: the SOI transition matrix between two profiles of the same examples."""

from __future__ import annotations

import click


@click.command("compare")
@click.argument("profile_a", type=click.Path())
@click.argument("profile_b", type=click.Path())
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write transitions.png (annotated heatmap), transitions.json and transitions.csv here.",
)
@click.option("--label", "labels", multiple=True, help="Keep examples with this label name or index (repeatable).")
@click.option("--source", "sources", multiple=True, help="Keep examples of this source (repeatable).")
@click.option("--task", "tasks", multiple=True, help="Keep examples of this task (repeatable).")
@click.option("--language", "languages", multiple=True, help="Keep examples in this language (repeatable).")
@click.option("--name-a", default=None, help="Name of A in the output (default: its path).")
@click.option("--name-b", default=None, help="Name of B in the output (default: its path).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for scripts).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing (files are still written).")
def compare(profile_a, profile_b, output_dir, labels, sources, tasks, languages, name_a, name_b, as_json, quiet):
    """Show how examples move between Subsets of Interest from PROFILE_A to PROFILE_B.

    Joins the two profiles on example_id and counts, for every category in A (rows), the
    category the example has in B (columns), with row shares. Examples found in only one
    profile are counted and reported, never dropped silently. Also prints the change in mean
    confidence and variability per category. Typical use: A from single-setting training,
    B from multi-task/-source/-lingual training of the same examples, or two seeds.

    Filters apply to each profile that has the column (an error if neither has it).

    \b
    Examples:
      soicurate compare single.parquet multi.parquet
      soicurate compare single.parquet multi.parquet -o cmp/ --source news --label positive
      soicurate compare seed0.parquet seed1.parquet --json > transitions.json
    """
    import json
    from pathlib import Path

    from soicurate.reporting.transitions import compare_profiles

    filters = {k: list(v) for k, v in (("label", labels), ("source", sources), ("task", tasks),
                                      ("language", languages)) if v}  # fmt: skip
    result = compare_profiles(profile_a, profile_b, filters=filters, name_a=name_a, name_b=name_b)
    data = result.to_dict()
    written = []
    if output_dir is not None:
        from soicurate.atomic import atomic_path, write_text_atomic

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.plot(out / "transitions.png")
        write_text_atomic(out / "transitions.json", json.dumps(data, indent=2))
        table = result.counts.join(
            result.shares.rename({c: f"{c}_share" for c in result.shares.columns if c != "category_a"}), on="category_a"
        )
        with atomic_path(out / "transitions.csv", ".csv") as tmp:
            table.write_csv(tmp)
        written = [str(out / n) for n in ("transitions.png", "transitions.json", "transitions.csv")]
        data["files"] = written
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not quiet:
        click.echo(result.format())
        for w in written:
            click.echo(f"wrote {w}")
