"""`soicurate compare`: SOI transition matrix between two profiles joined on example_id."""

from __future__ import annotations

import json
import struct

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.errors import UsageError
from soicurate.profiling.pipeline import read_profile
from soicurate.profiling.soi import CATEGORIES
from soicurate.recording.synthetic import generate_run
from soicurate.reporting.transitions import compare_profiles

N = 3000
SHIFT = 200  # B's ids are A's + SHIFT: 200 only in A, 200 only in B, 2800 in both


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    runner = CliRunner()
    for seed in (0, 1):
        generate_run(root / f"run{seed}", N, 6, seed=seed)
        result = runner.invoke(main, ["profile", str(root / f"run{seed}"), "-o", str(root / f"p{seed}.parquet"), "-q"])
        assert result.exit_code == 0, result.output
    shifted = read_profile(root / "p1.parquet").with_columns(pl.col("example_id") + SHIFT)
    shifted.with_columns(pl.col("category").cast(pl.String), pl.col("region").cast(pl.String)).write_parquet(
        root / "b.parquet"
    )
    return {"a": root / "p0.parquet", "a_seed1": root / "p1.parquet", "b": root / "b.parquet", "root": root}


def reference_matrix(a: pl.DataFrame, b: pl.DataFrame) -> np.ndarray:
    """The transition counts by a plain join and a Python loop."""
    joined = a.select("example_id", "category").join(b.select("example_id", "category"), on="example_id", suffix="_b")
    m = np.zeros((len(CATEGORIES), len(CATEGORIES)), np.int64)
    for ca, cb in joined.select(pl.col("category").cast(pl.String), pl.col("category_b").cast(pl.String)).iter_rows():
        m[CATEGORIES.index(ca), CATEGORIES.index(cb)] += 1
    return m


def test_matrix_counts_shares_and_examples_on_one_side(profiles):
    r = compare_profiles(profiles["a"], profiles["b"])
    a, b = read_profile(profiles["a"]), read_profile(profiles["b"])
    assert r.n_a == N and r.n_b == N
    assert r.n_joined == N - SHIFT == int(r.matrix.sum()) == r.counts["total"].sum()
    assert r.n_only_a == SHIFT and r.n_only_b == SHIFT
    assert r.n_joined + r.n_only_a == r.n_a and r.n_joined + r.n_only_b == r.n_b
    assert r.only_a_counts.sum() == SHIFT and r.only_b_counts.sum() == SHIFT
    # examples only in A are ids 0..199: their categories in A
    expected_only_a = a.filter(pl.col("example_id") < SHIFT)["category"].to_physical().to_numpy()
    np.testing.assert_array_equal(r.only_a_counts, np.bincount(expected_only_a, minlength=len(CATEGORIES)))
    np.testing.assert_array_equal(r.matrix, reference_matrix(a, b))
    shares = r.shares.select(CATEGORIES).to_numpy()
    nonempty = r.row_totals > 0
    np.testing.assert_allclose(np.nansum(shares[nonempty], axis=1), 1.0)
    assert np.isnan(shares[~nonempty]).all()
    d = r.to_dict()
    assert d["joined"] == N - SHIFT and d["only_in_a"] == SHIFT and d["only_in_b"] == SHIFT
    assert sum(sum(row.values()) for row in d["counts"].values()) == d["joined"]


def test_changes_are_means_over_the_joined_examples(profiles):
    r = compare_profiles(profiles["a"], profiles["b"])
    a, b = read_profile(profiles["a"]), read_profile(profiles["b"])
    joined = a.join(b.select("example_id", "confidence", "variability"), on="example_id", suffix="_b")
    means = joined.group_by(pl.col("category").cast(pl.String)).agg(
        pl.col("confidence").mean().alias("ca"), pl.col("confidence_b").mean().alias("cb"),
        pl.col("variability_b").mean().alias("vb"),
    )  # fmt: skip
    ch = r.changes
    for cat, ca, cb, vb in means.iter_rows():
        row = ch.filter(pl.col("category_a") == cat).row(0, named=True)
        assert row["confidence_a"] == pytest.approx(ca) and row["confidence_b"] == pytest.approx(cb)
        assert row["variability_b"] == pytest.approx(vb)
        assert row["delta_confidence"] == pytest.approx(cb - ca)


def test_same_profile_is_the_identity(profiles):
    r = compare_profiles(profiles["a"], profiles["a"])
    assert r.n_joined == N and r.n_only_a == r.n_only_b == 0
    assert np.count_nonzero(r.matrix - np.diag(np.diag(r.matrix))) == 0
    assert r.unchanged_share == 1.0
    assert r.changes["delta_confidence"].drop_nulls().abs().max() == 0


def test_filters(profiles):
    full = compare_profiles(profiles["a"], profiles["a_seed1"])
    news = compare_profiles(profiles["a"], profiles["a_seed1"], filters={"source": ["news"]})
    a = read_profile(profiles["a"])
    n_news = a.filter(pl.col("source") == "news").height
    assert news.n_joined == n_news < full.n_joined
    assert news.filtered_sides == {"source": ["A", "B"]}
    by_name = compare_profiles(profiles["a"], profiles["a_seed1"], filters={"label": ["positive"]})
    by_index = compare_profiles(profiles["a"], profiles["a_seed1"], filters={"label": [1]})
    np.testing.assert_array_equal(by_name.matrix, by_index.matrix)
    assert by_name.n_joined == a.filter(pl.col("label") == 1).height
    # a filter on a column only B has applies to B: A's other examples are then "only in A"
    no_source = a.drop("source")
    one_side = compare_profiles(no_source, profiles["a_seed1"], filters={"source": ["news"]})
    assert one_side.filtered_sides == {"source": ["B"]}
    assert one_side.n_joined == n_news and one_side.n_only_a == N - n_news
    with pytest.raises(UsageError, match="task"):
        compare_profiles(profiles["a"], profiles["a_seed1"], filters={"task": ["nli"]})


def test_cli_table_files_and_json(profiles, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cmp"
    result = runner.invoke(main, ["compare", str(profiles["a"]), str(profiles["b"]), "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    assert "only in A: 200" in result.output and "only in B: 200" in result.output
    assert "A \\ B" in result.output and "always_correct" in result.output
    png = (out / "transitions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 600 and height > 450
    data = json.loads((out / "transitions.json").read_text())
    assert data["joined"] == N - SHIFT and data["only_in_a"] == SHIFT
    table = pl.read_csv(out / "transitions.csv")
    assert table["total"].sum() == N - SHIFT and "always_correct_share" in table.columns

    result = runner.invoke(main, ["compare", str(profiles["a"]), str(profiles["a_seed1"]), "--json", "--source", "news",
                                  "--label", "negative"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)
    assert data["filters"] == {"label": ["negative"], "source": ["news"]}
    shares = [v for row in data["row_shares"].values() for v in row.values() if v is not None]
    assert shares and all(0 <= v <= 1 for v in shares)


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    return lines[0]


def test_cli_errors(profiles, tmp_path):
    runner = CliRunner()
    a = str(profiles["a"])
    line = one_line_error(runner.invoke(main, ["compare", a, str(tmp_path / "missing.parquet")]))
    assert "missing.parquet" in line and "does not exist" in line

    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet at all")
    assert "garbage.parquet" in one_line_error(runner.invoke(main, ["compare", str(garbage), a]))

    other = tmp_path / "other.parquet"
    pl.DataFrame({"example_id": [1, 2], "x": [0.1, 0.2]}).write_parquet(other)
    line = one_line_error(runner.invoke(main, ["compare", a, str(other)]))
    assert "not a soicurate profile" in line and "other.parquet" in line

    disjoint = tmp_path / "disjoint.parquet"
    (read_profile(profiles["a"]).with_columns(pl.col("example_id") + 10**9)
     .with_columns(pl.col("category").cast(pl.String), pl.col("region").cast(pl.String)).write_parquet(disjoint))  # fmt: skip
    line = one_line_error(runner.invoke(main, ["compare", a, str(disjoint), "-o", str(tmp_path / "none")]))
    assert "no example_id in common" in line
    assert not (tmp_path / "none").exists()

    line = one_line_error(runner.invoke(main, ["compare", a, a, "--task", "nli"]))
    assert "neither" in line and "task" in line
