"""`soicurate datamap`: draw the Dataset Cartography data map of a profile as a PNG."""

from __future__ import annotations

import click


@click.command("datamap")
@click.argument("profile", type=click.Path())
@click.option("-o", "--output", default="datamap.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG to write; a name ending in .html writes the interactive map (works offline).")
@click.option("--color-by", type=click.Choice(["category", "correctness"]), default="category", show_default=True,
              help="Colour points by Subset of Interest or by correctness.")
@click.option("--max-points", default=60_000, show_default=True, type=click.IntRange(100),
              help="Draw a uniform sample of at most this many points (all examples go into the histograms).")
@click.option("--no-marginals", is_flag=True, help="No marginal histograms.")
@click.option("--title", default=None, help="Plot title (default: the run's model).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
def datamap(profile, output, color_by, max_points, no_marginals, title, quiet):
    """Draw the data map of PROFILE: variability (x) against confidence (y).

    Region boundaries are the thresholds the profile was made with (quantiles of the data
    by default), drawn as dashed lines.

    \b
    Examples:
      soicurate datamap profile.parquet -o datamap.png
      soicurate datamap profile.parquet --color-by correctness --max-points 200000
      soicurate datamap profile.parquet -o datamap.html      # hover shows id, label, category
    """
    from soicurate.profiling.pipeline import read_profile
    from soicurate.reporting.datamap import plot_datamap, profile_metadata

    df = read_profile(profile)
    meta = profile_metadata(profile)
    runs = meta.get("runs") or []
    if title is None:
        model = runs[0].get("model") if runs else None
        title = f"Data map: {model}" if model else "Data map"
    if str(output).lower().endswith(".html"):
        from soicurate.reporting.html import write_datamap_html

        write_datamap_html(df, output, thresholds=meta.get("region_thresholds"), title=title,
                           label_names=meta.get("label_names"))  # fmt: skip
    else:
        plot_datamap(df, output, color_by=color_by, thresholds=meta.get("region_thresholds"), title=title,
                     max_points=max_points, marginals=not no_marginals)  # fmt: skip
    if not quiet:
        click.echo(f"wrote {output}")
