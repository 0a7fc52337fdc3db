"""`soicurate multi`: single- vs multi-setting stage one (multi-source, -lingual, -task)."""

from __future__ import annotations

import click


@click.command("multi")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="YAML/TOML: the settings of `soicurate train`, plus a settings section.")
@click.option("-o", "--output-dir", default=None, help="Experiment directory (default: from the config, else runs/multi).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def multi(config_file, output_dir, as_json, quiet):
    """Train single-setting and multi-setting variants of the same data and compare their SOI.

    Trains one run per dataset (single setting) and one on all datasets together (multi
    setting), records dynamics, profiles every run and writes the SOI transitions
    single -> multi of every dataset to OUTPUT_DIR/transitions/. Example ids are those a
    single `soicurate train` run on each dataset gets, so all profiles join.

    \b
    Config (YAML):
      model: ./minilm
      text_column: sentence
      epochs: 3
      settings:
        kind: source            # or language, or task (one head per task)
        datasets: {rt: data/rt.csv, imdb: data/imdb.csv}

    \b
    Examples:
      soicurate multi --config multi.yaml -o runs/multi-source
    """
    import json

    from soicurate.training.multisetting import load_multi_config, run_multisetting
    from soicurate.training.trainer import silence_libraries

    silence_libraries()
    cfg = load_multi_config(config_file, output_dir=output_dir)
    log = (lambda msg: None) if quiet or as_json else (lambda msg: click.echo(msg, err=True))
    summary = run_multisetting(cfg, progress=not quiet and not as_json, log=log)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif not quiet:
        for name, row in summary["datasets"].items():
            t = row.get("transitions", {})
            click.echo(f"{name}: {row['examples']} examples, SOI unchanged single -> multi: {t.get('unchanged_share')}")
        click.echo(f"\nsummary: {cfg.output_dir}/summary.json")
