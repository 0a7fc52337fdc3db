"""`soicurate import`: convert another tool's dynamics logs into a soicurate run directory."""

from __future__ import annotations

import click

from soicurate.cli.options import mapping_from_options, pop_table_options, table_mapping_options


@click.command("import")
@click.argument("source", type=click.Path())
@click.argument("run_dir", type=click.Path(file_okay=False))
@table_mapping_options
@click.option("--force", is_flag=True, help="Replace RUN_DIR if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def import_log(source, run_dir, force, quiet, **table_opts):
    """Convert SOURCE (Cartography logs or a long table) into the run directory RUN_DIR.

    SOURCE is a Dataset Cartography output directory (training_dynamics/dynamics_epoch_N.jsonl
    with guid, logits_epoch_N and gold) or a long table with one row per example and epoch
    (CSV, JSONL or Parquet), described by the --*-col options.

    \b
    Examples:
      soicurate import cartography_out/ runs/imported
      soicurate import dynamics.parquet runs/imported --id-col idx --gold-col label --logits-col logits
      soicurate import preds.csv runs/imported --prob-col p1 --group-col source
    """
    from pathlib import Path

    from soicurate.errors import UsageError
    from soicurate.profiling.reader import RunReader
    from soicurate.profiling.sources import detect_format

    pop_table_options(table_opts)
    mapping = mapping_from_options(table_opts)
    out = Path(run_dir)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to replace it)")
    kind = detect_format(source)
    if kind == "native":
        raise UsageError(f"{source}: is already a soicurate run directory")
    if kind == "cartography":
        from soicurate.recording.adapters.cartography import import_cartography

        import_cartography(source, out, overwrite=force)
    else:
        from soicurate.recording.adapters.table import import_table

        if mapping is None:
            raise click.UsageError("a table needs a probability column: --probs-col, --logits-col, --prob-col or --pred-col with --p-gold-col")
        import_table(source, out, mapping, overwrite=force)
    reader = RunReader(out)
    for _ in reader.iter_blocks():
        pass
    if not quiet:
        click.echo(f"imported {source} ({kind}) -> {out}: {reader.num_examples} examples x {len(reader.epochs)} epochs")
