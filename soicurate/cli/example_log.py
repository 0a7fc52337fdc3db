"""`soicurate example-log`: write a synthetic dynamics run to try the tool on."""

from __future__ import annotations

import click


@click.command("example-log")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--examples", "num_examples", default=2000, show_default=True, type=click.IntRange(1), help="Number of examples.")
@click.option("--epochs", "num_epochs", default=8, show_default=True, type=click.IntRange(2), help="Recorded epochs.")
@click.option("--labels", "num_labels", default=2, show_default=True, type=click.IntRange(2), help="Number of labels.")
@click.option("--seed", default=0, show_default=True, help="Seed of the simulated training run.")
@click.option("--data-seed", default=1234, show_default=True, help="Seed of the simulated dataset (same value: same examples).")
@click.option("--flip-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1), help="Share of flipped (wrong) labels.")
@click.option("--force", is_flag=True, help="Replace RUN_DIR if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def example_log(run_dir, num_examples, num_epochs, num_labels, seed, data_seed, flip_rate, force, quiet):
    """Write a SYNTHETIC dynamics run (no model is trained) to RUN_DIR.

    The examples have a latent ease and learning speed, a share of flipped labels and a
    source column, so every Subset of Interest occurs. Use several --seed values with the
    same --data-seed for several "fine-tuning seeds" of the same data.

    \b
    Examples:
      soicurate example-log runs/synthetic
      soicurate example-log runs/s1 --seed 1 --examples 100000 --epochs 10
    """
    from soicurate.atomic import atomic_directory
    from soicurate.recording.synthetic import generate_run

    with atomic_directory(run_dir, overwrite=force) as tmp:
        generate_run(tmp, num_examples, num_epochs, num_labels=num_labels, seed=seed, data_seed=data_seed, flip_rate=flip_rate)
    if not quiet:
        click.echo(f"wrote synthetic run: {run_dir} ({num_examples} examples x {num_epochs} epochs)")
