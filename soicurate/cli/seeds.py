"""`soicurate seeds`: a sweep of weight-init x data-order seeds (Dodge et al., 2020)."""

from __future__ import annotations

import click


def _seed_list(ctx, param, value):
    if value is None:
        return None
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers (for example 0,1,2)") from None
    if not seeds:
        raise click.BadParameter("no seeds given")
    return seeds


@click.command("seeds")
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="YAML or TOML training config (as for `soicurate train`); seed, data_seed and output_dir are set per run.")
@click.option("--init-seeds", required=True, callback=_seed_list, help="Comma-separated weight-initialisation seeds.")
@click.option("--data-seeds", default="0", show_default=True, callback=_seed_list, help="Comma-separated data-order seeds.")
@click.option("--early-stop", help="t,f,p: start the first t runs, evaluate after a fraction f of the epochs, continue the best p.")
@click.option("--eval-set", help="Evaluation set that ranks runs (default: the config's first).")
@click.option("--metric", default="accuracy", show_default=True, type=click.Choice(["accuracy", "macro_f1"]), help="Metric that ranks runs.")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Sweep directory (runs, sweep.json, plots, profile).")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each run's checkpoints/ (for resuming; about 3x the model each). By default they are deleted once a run is finished or stopped.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep in the same directory: finished runs are reused, others resume from their last checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print sweep.json on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, no summary.")
def seeds(config_file, init_seeds, data_seeds, early_stop, eval_set, metric, output_dir, keep_checkpoints, resume,
          as_json, quiet):  # fmt: skip
    """Fine-tune once per (init seed, data seed) pair and report seed sensitivity.

    Writes DIR/run-iI-dD/ (one `soicurate train` run each), DIR/sweep.json (final scores,
    expected best score E[max of n] for n = 1..N per eval set, the variance split into init,
    data-order and residual parts for a full grid, early-stopping bookkeeping, cross-seed
    SOI agreement), DIR/expected_max.png and DIR/profile.parquet (all completed runs profiled
    together).

    \b
    Examples:
      soicurate seeds --config exp.yaml --init-seeds 0,1,2 --data-seeds 0,1 -o sweeps/exp
      soicurate seeds --config exp.yaml --init-seeds 0,1,2,3 --data-seeds 0,1 \\
          --early-stop 8,0.5,2 -o sweeps/exp-es
      soicurate seeds --config exp.yaml --init-seeds 0,1,2 --data-seeds 0,1 -o sweeps/exp --resume
    """
    import json

    from soicurate.training.config import TrainConfig
    from soicurate.training.seeds import check_sweep_dir, parse_early_stop, run_sweep, write_sweep

    early = parse_early_stop(early_stop) if early_stop else None
    out = check_sweep_dir(output_dir)
    config = TrainConfig.from_file(config_file)
    if quiet or as_json:
        from soicurate.training.trainer import silence_libraries

        silence_libraries()
    sweep = run_sweep(config, init_seeds, data_seeds, out, early, eval_set=eval_set, metric=metric,
                      progress=not quiet and not as_json, keep_checkpoints=keep_checkpoints, resume=resume)  # fmt: skip
    sweep = write_sweep(sweep, out)
    if as_json:
        click.echo(json.dumps(sweep, indent=2))
    elif not quiet:
        click.echo(format_sweep(sweep))


def format_sweep(sweep: dict) -> str:
    metric = sweep["metric"]
    c = sweep["compute"]
    lines = [f"seed sweep: {len(sweep['runs'])} runs, {c['epochs_run']} epochs trained"]
    early = sweep.get("early_stopping")
    if early:
        pairs = lambda ks: ", ".join(f"i{i}-d{d}" for i, d in ks)  # noqa: E731
        lines.append(f"  early stopping: {early['t']} started, ranked by {early['metric']} on {early['eval_set']} "
                     f"after epoch {early['cut_epoch']}; continued {pairs(early['continued'])}")  # fmt: skip
        lines.append(f"  compute: {c['epochs_run']} of {c['epochs_full_sweep']} epochs, "
                     f"{c['epochs_saved']} saved ({c['fraction_saved']:.0%})")  # fmt: skip
    for name, per_metric in sweep["expected_max"].items():
        row = per_metric.get(metric)
        if row:
            curve = ", ".join(f"n={n}: {v:.4f}" for n, v in zip(row["n"], row["expected_max"]))
            lines.append(f"  {name} expected best {metric}: {curve}")
    for name, v in (sweep.get("variance_decomposition") or {}).items():
        lines.append(f"  {name} variance: init {v['share_init']:.0%}, data order {v['share_data']:.0%}, "
                     f"residual {v['share_residual']:.0%}")  # fmt: skip
    if sweep.get("agreement"):
        a = sweep["agreement"]
        lines.append(f"  SOI agreement across runs: mean {a['mean_agreement']:.3f}, "
                     f"all runs agree on {a['share_full_agreement']:.0%} of examples")  # fmt: skip
    lines.append(f"sweep: {sweep['plot'].rsplit('/', 1)[0]}/sweep.json")
    return "\n".join(lines)
