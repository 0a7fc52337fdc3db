"""`soicurate train`: stage-one fine-tuning that records training dynamics."""

from __future__ import annotations

import click


def _eval_pairs(ctx, param, values):
    pairs = {}
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"{value!r}: expected NAME=DATA (for example test=data/test.csv)")
        name, spec = value.split("=", 1)
        pairs[name.strip()] = spec.strip()
    return pairs or None


@click.command("train")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML file with any of these settings; flags win.")
@click.option("--model", help="Model: a Hub name or a local directory.")
@click.option("--train", "train_data", help="Training data: Hub name ('name[config]:split'), save_to_disk directory, or CSV/JSON/Parquet file.")
@click.option("--eval", "eval_data", multiple=True, callback=_eval_pairs, help="Evaluation set NAME=DATA, evaluated every epoch (repeatable: in- and out-of-distribution).")
@click.option("-o", "--output-dir", help="Where model/, dynamics/, checkpoints/ and metrics.json go.  [default: runs/train]")
@click.option("--text-column", help="Text column.  [default: text]")
@click.option("--text-pair-column", help="Second text column for pair tasks (entailment, paraphrase).")
@click.option("--label-column", help="Label column.  [default: label]")
@click.option("--label-names", help="Comma-separated label names in index order (default: from the data).")
@click.option("--id-column", help="Example id column (default: example_id/id/idx/guid if present, else a stable hash of the row).")
@click.option("--max-length", type=int, help="Truncate inputs to this many tokens.  [default: 128]")
@click.option("--epochs", type=int, help="Training epochs.  [default: 3]")
@click.option("--lr", "learning_rate", type=float, help="Peak learning rate.  [default: 2e-5]")
@click.option("--batch-size", type=int, help="Training batch size per device.  [default: 16]")
@click.option("--eval-batch-size", type=int, help="Evaluation batch size.  [default: 64]")
@click.option("--warmup", type=float, help="Linear warm-up: a ratio of the steps in [0, 1) or a number of steps.  [default: 0]")
@click.option("--weight-decay", type=float, help="AdamW weight decay.  [default: 0]")
@click.option("--seed", type=int, help="Seed of the weight initialisation (classification head) and dropout.  [default: 42]")
@click.option("--data-seed", type=int, help="Seed of the data order (default: --seed).")
@click.option("--record", type=click.Choice(["train", "eval", "none"]), help="Record dynamics from the training pass, an extra eval pass per epoch, or not at all.  [default: train]")
@click.option("--group-by-length/--no-group-by-length", default=None, help="Batch examples of similar length (less padding).  [default: on]")
@click.option("--gradient-accumulation-steps", type=int, help="Accumulate gradients over this many batches.  [default: 1]")
@click.option("--fp16", is_flag=True, default=None, help="Mixed precision fp16 (GPU).")
@click.option("--bf16", is_flag=True, default=None, help="Mixed precision bf16.")
@click.option("--evaluate", type=click.Choice(["epoch", "end"]), help="Evaluate the --eval sets after every epoch or only at the end.  [default: epoch]")
@click.option("--max-train-examples", type=int, help="Train on a random subset of this size (fixed by the data seed).")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=2), help="Run N fine-tuning runs (seeds SEED..SEED+N-1, data order changing with each unless --data-seed fixes it) as a seed sweep in OUTPUT_DIR; for grids and early stopping see `soicurate seeds`.")
@click.option("--resume", is_flag=True, default=None, help="Resume from the last checkpoint in OUTPUT_DIR/checkpoints (with --seeds: continue the interrupted sweep in OUTPUT_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, no summary.")
def train(config_file, train_data, eval_data, label_names, n_seeds, as_json, quiet, **flags):
    """Fine-tune a classifier and record its training dynamics (stage one).

    Writes OUTPUT_DIR/model (final model), OUTPUT_DIR/dynamics (a run directory for
    `soicurate profile`), OUTPUT_DIR/checkpoints and OUTPUT_DIR/metrics.json (accuracy and
    macro-F1 of every --eval set at every epoch, seconds per epoch).

    \b
    Examples:
      soicurate train --model bert-base-uncased --train imdb:train \\
          --eval test=imdb:test --epochs 3 -o runs/imdb
      soicurate train --model ./minilm --train data/train.csv --text-column sentence \\
          --eval test=data/test.csv --eval ood=data/ood.csv --seed 1 --data-seed 7
      soicurate train --model ./minilm --train snli_dir --text-column premise \\
          --text-pair-column hypothesis --record eval -o runs/snli
      soicurate train --config experiment.yaml --seed 3
      soicurate train --config experiment.yaml --resume
      soicurate train --config experiment.yaml --seeds 5 -o sweeps/exp
    """
    import json

    from soicurate.training.config import TrainConfig
    from soicurate.training.trainer import silence_libraries
    from soicurate.training.trainer import train as run_training

    if quiet or as_json:
        silence_libraries()

    overrides = {k: v for k, v in flags.items() if v is not None}
    if train_data is not None:
        overrides["train"] = train_data
    if eval_data is not None:
        overrides["eval"] = eval_data
    if label_names is not None:
        overrides["label_names"] = [n.strip() for n in label_names.split(",")]
    config = TrainConfig.from_file(config_file, **overrides) if config_file else TrainConfig(**overrides)
    if n_seeds:
        return train_seeds(config, n_seeds, fixed_data_seed=flags.get("data_seed") is not None or
                           config.data_seed is not None, as_json=as_json, quiet=quiet)  # fmt: skip
    metrics = run_training(config, progress=not quiet and not as_json)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    elif not quiet:
        click.echo(format_metrics(metrics))


def train_seeds(config, n: int, *, fixed_data_seed: bool, as_json: bool, quiet: bool) -> None:
    """`train --seeds N`: N runs of one configuration, written and summarised as a sweep."""
    import json

    from soicurate.cli.seeds import format_sweep
    from soicurate.training.seeds import check_sweep_dir, run_sweep, write_sweep

    config.validate()
    out = check_sweep_dir(config.output_dir)
    init_seeds = list(range(config.seed, config.seed + n))
    resume = config.resume  # with --seeds: continue the interrupted sweep (finished runs reused)
    progress = not quiet and not as_json
    if fixed_data_seed:  # only the initialisation changes
        sweep = run_sweep(config, init_seeds, [config.effective_data_seed], out, progress=progress, resume=resume)
    else:
        sweep = run_sweep(config, init_seeds, init_seeds, out, paired=True, progress=progress, resume=resume)
    sweep = write_sweep(sweep, out)
    if as_json:
        click.echo(json.dumps(sweep, indent=2))
    elif not quiet:
        click.echo(format_sweep(sweep))


def format_metrics(metrics: dict) -> str:
    lines = [
        f"trained {metrics['model']} on {metrics['num_train_examples']} examples, {metrics['epochs']} epochs, "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch"
    ]
    for row in metrics["per_epoch"]:
        parts = [f"epoch {row['epoch']}"]
        if "train_loss" in row:
            parts.append(f"train loss {row['train_loss']:.4f}")
        for name, values in row.items():
            if isinstance(values, dict) and "accuracy" in values:
                parts.append(f"{name} acc {values['accuracy']:.4f} macro-F1 {values.get('macro_f1', float('nan')):.4f}")
        lines.append("  " + ", ".join(parts))
    if metrics.get("dynamics_dir"):
        lines.append(f"dynamics: {metrics['dynamics_dir']}  (next: soicurate profile {metrics['dynamics_dir']})")
    lines.append(f"model: {metrics['model_dir']}")
    return "\n".join(lines)
