"""`soicurate two-stage`: stage one, profile, SOI subset, stage two against its baselines."""

from __future__ import annotations

import click


@click.command("two-stage")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="YAML/TOML: the stage-one settings of `soicurate train`, plus a two_stage section.")
@click.option("-o", "--output-dir", default=None, help="Experiment directory (default: from the config, else runs/two-stage).")
@click.option("--seeds", default=None, help="Comma-separated stage-two seeds, e.g. 0,1,2.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def two_stage(config_file, output_dir, seeds, as_json, quiet):
    """Two-stage fine-tuning on a Subset-of-Interest selection, with baselines.

    Stage one fine-tunes on all training data and records dynamics; the profile picks the
    subset (default: forgettable + forgotten + ambiguous); stage two continues from the
    stage-one model on (a) the SOI subset, (b) a random subset of the same size and (c) the
    full data for the same number of steps. Prints accuracy and macro-F1 of every evaluation
    set (mean ± std over seeds) and writes OUTPUT_DIR/results.json.

    \b
    Config (YAML):
      model: ./minilm
      train: data/train.csv
      eval: {test: data/test.csv, ood: data/ood.csv}
      epochs: 3
      two_stage:
        categories: [forgettable, forgotten]
        regions: [ambiguous]
        stage_two_epochs: 2
        stage_two_learning_rate: 2.0e-5
        seeds: [0, 1, 2]

    \b
    Examples:
      soicurate two-stage --config experiment.yaml -o runs/exp1
      soicurate two-stage --config experiment.yaml --seeds 0,1,2,3,4 --json
    """
    import json

    from soicurate.training.twostage import format_table, load_two_stage_config, run_two_stage

    from soicurate.training.trainer import silence_libraries

    silence_libraries()
    cfg = load_two_stage_config(config_file, output_dir=output_dir, seeds=seeds)
    log = (lambda msg: None) if quiet or as_json else (lambda msg: click.echo(msg, err=True))
    result = run_two_stage(cfg, progress=not quiet and not as_json, log=log)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        click.echo(format_table(result["table"]))
        click.echo(f"\nresults: {cfg.output_dir}/results.json")
