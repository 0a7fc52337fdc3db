"""`soicurate curate`: choose examples by their training dynamics and write them as a dataset."""

from __future__ import annotations

import click

from soicurate.cli.options import common_output_options


@click.command("curate")
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--dataset", "dataset", required=True,
              help="The data the profiled run trained on, as `soicurate train --train` takes it: a Hub name "
                   "('name', 'name[config]:split'), a save_to_disk directory, or a CSV/JSON/Parquet file.")
@click.option("--split", default="train", show_default=True, help="Split of --dataset (unless given as 'name:split').")
@click.option("--id-column", default=None,
              help="Example id column, as given to `soicurate train` "
                   "(default: example_id/id/idx/guid, else a row hash).")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Curated folder to write (atomically): dataset/, data/train.parquet|jsonl, ids.txt, "
                   "selection.parquet, README.md.")
@click.option("--category", "categories", multiple=True, metavar="NAME",
              help="Keep this Subset of Interest (repeatable, or comma-separated): always_correct, learned_early, "
                   "learned_late, forgettable, forgotten, unlearned.")
@click.option("--region", "regions", multiple=True, metavar="NAME",
              help="Keep this cartography region (repeatable): easy_to_learn, ambiguous, hard_to_learn. "
                   "Categories and regions are a union.")
@click.option("--top", "top", multiple=True, metavar="METRIC:FRACTION",
              help="AND: only the FRACTION of the whole profile with the largest METRIC, e.g. variability:0.33.")
@click.option("--bottom", "bottom", multiple=True, metavar="METRIC:FRACTION",
              help="AND: only the FRACTION of the whole profile with the smallest METRIC, e.g. confidence:0.25.")
@click.option("--where", default=None, metavar="SQL",
              help="AND: a SQL condition over the profile's columns, "
                   "e.g. \"confidence < 0.5 AND forgetting_events >= 2\".")
@click.option("--min-agreement", type=float, default=None,
              help="AND: category_agreement >= this (profiles of several seeds), e.g. 0.8.")
@click.option("--balance-labels", is_flag=True, help="Downsample every label to the rarest label's count (seeded).")
@click.option("--max-examples", type=int, default=None, help="Keep at most this many, drawn at random (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --balance-labels and --max-examples.")
@click.option("--name", "pretty_name", default=None,
              help="Title of the dataset card (default: from the source and rule).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT_DIR if it exists.")
@click.option("--push-to", default=None, metavar="REPO_ID", help="Then push the folder to this Hub dataset repository.")
@click.option("--private/--public", "private", default=None,
              help="Visibility of a repository --push-to creates (default: the Hub's default).")
@click.option("--token-env", default=None, metavar="VAR",
              help="Read the Hub token from this environment variable (default: HF_TOKEN, then `hf auth login`).")
@common_output_options
def curate(profile, dataset, split, id_column, output_dir, categories, regions, top, bottom, where, min_agreement,
           balance_labels, max_examples, seed, pretty_name, overwrite, push_to, private, token_env, as_json,
           quiet):  # fmt: skip
    """Choose examples of a PROFILE by their training dynamics; write them as a dataset with a card.

    \b
    How the options combine (docs/curate.md):
      1. --category / --region picks are a union (none given: every example);
      2. AND each --top / --bottom quantile (computed over the whole profile);
      3. AND --where (SQL over the profile's columns);
      4. AND --min-agreement (cross-seed agreement on the category);
      5. --balance-labels: every label downsampled to the rarest one's count;
      6. --max-examples: a random cap (with balance, per label).
    The rows are joined back to --dataset by example_id, derived exactly as `soicurate train`
    derived it; profile ids missing from the dataset are an error. Nothing is written on error.

    \b
    Examples:
      soicurate curate profile.parquet --dataset data/train.csv -o curated/hard \\
          --category forgettable --category forgotten --region ambiguous
      soicurate curate profile.parquet --dataset glue[sst2]:train -o curated/amb --top variability:0.33
      soicurate curate seeds.parquet --dataset data/train.csv -o curated/stable \\
          --where "confidence < 0.5 AND forgetting_events >= 2" --min-agreement 0.8 --balance-labels
      soicurate curate profile.parquet --dataset data/train.csv -o curated/hard --category unlearned \\
          --push-to alice/sst2-unlearned --private
    """
    import json

    from soicurate.curation import run_curation

    result = run_curation(
        profile, dataset, split=split, id_column=id_column, categories=categories, regions=regions, top=top,
        bottom=bottom, where=where, min_agreement=min_agreement, balance_labels=balance_labels,
        max_examples=max_examples, seed=seed, output_dir=output_dir, overwrite=overwrite, pretty_name=pretty_name,
        push_to=push_to, private=private, token_env=token_env, progress=not quiet and not as_json,
    )  # fmt: skip
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    for w in summary["warnings"]:
        click.echo(f"Warning: {w}", err=True)
    if quiet:
        return
    click.echo(format_summary(summary))


def format_summary(summary: dict) -> str:
    lines = [f"selected {summary['selected']} of {summary['profile_examples']} examples: {summary['rule']}"]
    for step in summary["steps"]:
        lines.append(f"  {step['step']:<10} {step['remaining']:>9}  {step['rule']}")
    counts = summary.get("counts") or {}
    for key in ("category", "region", "label"):
        shown = {k: v for k, v in (counts.get(key) or {}).items() if v}
        if shown:
            lines.append(f"{key + ':':<10}" + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if summary.get("outputs"):
        out = summary["outputs"]["output_dir"]
        lines.append(f"wrote {out} (README.md, dataset/, data/, ids.txt, selection.parquet)")
    if summary.get("push"):
        lines.append(f"pushed to {summary['push']['url']}")
    return "\n".join(lines)
