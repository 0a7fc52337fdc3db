"""`soicurate profile`: per-example statistics, Subsets of Interest and cartography regions."""

from __future__ import annotations

import click

from soicurate.cli.options import common_output_options, mapping_from_options, pop_table_options, table_mapping_options


@click.command("profile")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="profile.parquet", show_default=True, type=click.Path(dir_okay=False),
              help="Profile Parquet file to write (written atomically).")
@click.option("--late-fraction", default=0.25, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Late window for learned_late: the last ceil(FRACTION x epochs) epochs, at least one.")
@click.option("--regions", "region_mode", type=click.Choice(["quantile", "absolute"]), default="quantile", show_default=True,
              help="Cartography regions from data quantiles or from absolute thresholds.")
@click.option("--region-fraction", default=1 / 3, show_default="0.333", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="quantile: share of most variable examples called ambiguous, and of least confident called hard.")
@click.option("--variability-threshold", type=float, default=None, help="absolute: ambiguous when variability >= this.")
@click.option("--confidence-threshold", type=float, default=None, help="absolute: hard_to_learn when confidence < this.")
@click.option("--block-rows", default=1 << 18, show_default=True, type=click.IntRange(1), help="Examples per block (bounds memory).")
@table_mapping_options
@common_output_options
def profile(runs, output, late_fraction, region_mode, region_fraction, variability_threshold, confidence_threshold,
            block_rows, as_json, quiet, **table_opts):  # fmt: skip
    """Profile one or several dynamics RUNS into a per-example table.

    Each RUN is a soicurate run directory, a Dataset Cartography training_dynamics
    directory, or a long table (CSV, JSONL, Parquet) with the --*-col mapping. Several
    RUNS must be runs (seeds) of the same examples: the profile then holds the mean
    statistics, the modal category and how many runs agree on it.

    Prints the count and share of each Subset of Interest, overall, per label and per
    source/task/language column the runs know. Exits with status 2 and one line naming the
    file and example on malformed logs; no output is written then.

    \b
    Examples:
      soicurate profile runs/seed0 -o profile.parquet
      soicurate profile runs/seed0 runs/seed1 runs/seed2 -o seeds.parquet --json
      soicurate profile cartography_out/ --regions absolute \\
          --variability-threshold 0.2 --confidence-threshold 0.5
      soicurate profile logs.csv --id-col guid --epoch-col epoch --gold-col label --probs-col probs
    """
    import json

    from soicurate.profiling.pipeline import write_profile
    from soicurate.profiling.regions import RegionRule
    from soicurate.profiling.sources import open_run

    pop_table_options(table_opts)
    mapping = mapping_from_options(table_opts)
    if region_mode == "absolute" and (variability_threshold is None or confidence_threshold is None):
        raise click.UsageError("--regions absolute needs --variability-threshold and --confidence-threshold")
    rule = RegionRule(mode=region_mode, fraction=region_fraction,
                      variability_threshold=variability_threshold, confidence_threshold=confidence_threshold)  # fmt: skip
    readers = [open_run(r, mapping) for r in runs]
    summary = write_profile(readers, output, late_fraction=late_fraction, regions=rule, block_rows=block_rows,
                            progress=not quiet and not as_json)  # fmt: skip
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=float))
    elif not quiet:
        click.echo(summary.format())
        click.echo(f"\nwrote {output}")
