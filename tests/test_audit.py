"""`soicurate audit`: the report, its tables, and likely label problems found from dynamics.

The label-problem detector is checked the way the issue asks: a tiny BERT (tests/tiny_model.py)
trained for a few CPU epochs on a task where 10% of the labels were flipped on purpose; the
top k ranked examples (k = the number flipped) must be mostly the flipped ones.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.profiling.pipeline import read_profile, write_profile
from soicurate.recording.synthetic import generate_run
from soicurate.recording.writer import DynamicsWriter
from soicurate.reporting.audit import audit
from soicurate.reporting.html import map_data
from soicurate.reporting.label_issues import find_label_issues

sys.path.insert(0, str(Path(__file__).parent))

FLIP_RATE = 0.1


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


# -- the label-problem score on a hand-made run --------------------------------------------------
def test_score_formula_three_labels_with_margins(tmp_path):
    """Three labels, logits given: issue_score is the mean probability of the modal other label
    (exact at the epochs that predicted it, 0 at the others), the flag needs half the epochs."""
    logits = {  # example id -> logits per epoch (4 epochs), gold label 0 for every example
        10: [[0, 3, 0], [0, 2, 0], [0, 4, 1], [3, 0, 0]],  # predicts 1 at 3 of 4 epochs
        11: [[2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0]],  # always right
        12: [[0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]],  # 1 and 2 alternate: tie, lower label wins
    }
    w = DynamicsWriter(tmp_path / "run", ["a", "b", "c"], num_examples=3, recorded_by="synthetic")
    for e in range(4):
        w.log_logits(np.array(list(logits)), np.array([v[e] for v in logits.values()], float), np.zeros(3, int))
        w.end_epoch()
    write_profile(tmp_path / "run", tmp_path / "p.parquet")
    li = find_label_issues(tmp_path / "p.parquet")
    s = {r["example_id"]: r for r in li.scores.to_dicts()}

    def p(row, k):
        z = np.exp(np.array(row, float))
        return z[k] / z.sum()

    ex = s[10]
    p_m = [p(logits[10][e], 1) for e in range(3)]
    assert ex["predicted_label"] == "b" and ex["given_label"] == "a" and ex["predicted_share"] == 0.75
    assert ex["issue_score"] == pytest.approx(sum(p_m) / 4, abs=1e-6)
    assert ex["predicted_confidence"] == pytest.approx(sum(p_m) / 3, abs=1e-6)
    assert ex["label_score"] == pytest.approx(1 - ex["issue_score"])
    assert ex["is_label_issue"] and ex["rank"] == 1
    assert s[11]["predicted_label"] is None and s[11]["issue_score"] == 0 and not s[11]["is_label_issue"]
    assert s[12]["predicted_label"] == "b" and s[12]["predicted_share"] == 0.5
    assert not li.exact_probability  # three labels: a lower bound


def test_score_binary_is_one_minus_confidence(tmp_path):
    generate_run(tmp_path / "run", 500, 5, flip_rate=0.1)
    write_profile(tmp_path / "run", tmp_path / "p.parquet")
    li = find_label_issues(tmp_path / "p.parquet")
    s = li.scores
    np.testing.assert_allclose(s["issue_score"].to_numpy(), 1 - s["confidence"].to_numpy(), atol=1e-6)
    assert li.exact_probability
    assert s["rank"].to_list() == list(range(1, 501))
    assert (s["issue_score"].diff().drop_nulls() <= 1e-12).all()  # ranked
    flagged = s.filter(pl.col("is_label_issue"))
    assert (flagged["predicted_share"] >= 0.5).all() and (flagged["issue_score"] >= 0.5).all()
    flipped = pl.read_parquet(tmp_path / "run" / "examples.parquet").filter(pl.col("flipped"))["example_id"]
    assert li.precision_at(flipped.to_list()) > 0.7


# -- the tiny model with flipped labels ------------------------------------------------------------
def flipped_task(n: int, seed: int = 0):
    """Sentences labelled by their majority of positive/negative words (no ties), then 10% of
    the labels flipped. Returns texts, labels, ids and the flipped ids."""
    from tiny_model import NEGATIVE, NEUTRAL, POSITIVE

    rng = np.random.default_rng(seed)
    texts, labels = [], []
    while len(texts) < n:
        n_pos, n_neg = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        if n_pos == n_neg:
            continue
        words = list(rng.choice(POSITIVE, n_pos)) + list(rng.choice(NEGATIVE, n_neg))
        words += list(rng.choice(NEUTRAL, rng.integers(2, 6)))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(int(n_pos > n_neg))
    labels = np.array(labels)
    flip = rng.choice(n, int(round(FLIP_RATE * n)), replace=False)
    labels[flip] = 1 - labels[flip]
    ids = [5000 + 7 * i for i in range(n)]  # not row numbers
    return texts, labels.tolist(), ids, sorted(ids[i] for i in flip)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    import datasets
    import torch
    from tiny_model import LABEL_NAMES, make_model, make_tokenizer, training_args

    from soicurate.recording.hf import DynamicsTrainer

    root = tmp_path_factory.mktemp("tiny")
    texts, labels, ids, flipped = flipped_task(600)
    tok = make_tokenizer()
    features = datasets.Features({"example_id": datasets.Value("int64"), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=LABEL_NAMES)})  # fmt: skip
    ds = datasets.Dataset.from_dict({"example_id": ids, "text": texts, "label": labels}, features=features)
    pl.DataFrame({"example_id": ids, "text": texts, "label": [LABEL_NAMES[x] for x in labels]}).write_csv(
        root / "train.csv"
    )
    ds = ds.map(lambda b: tok(b["text"], truncation=True), batched=True)
    args = training_args(root / "out", num_train_epochs=6, per_device_train_batch_size=16)
    # One thread: on a shared 2-core machine two OpenMP threads spin against other work and
    # training took 10x longer (36 s against 3.5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        DynamicsTrainer(model=make_model(), args=args, train_dataset=ds, processing_class=tok).train()
    finally:
        torch.set_num_threads(threads)
    write_profile(root / "out" / "dynamics", root / "profile.parquet")
    return {"root": root, "profile": root / "profile.parquet", "flipped": flipped, "csv": root / "train.csv"}


def test_tiny_model_flipped_labels_are_ranked_first(tiny_run, tmp_path):
    out = tmp_path / "audit"
    result = CliRunner().invoke(
        main, ["audit", str(tiny_run["profile"]), "-o", str(out), "--dataset", str(tiny_run["csv"])]
    )
    assert result.exit_code == 0, result.output + result.stderr
    flipped = set(tiny_run["flipped"])
    k = len(flipped)
    scores = pl.read_parquet(out / "label_scores.parquet")
    assert scores.height == 600 and scores["rank"].to_list() == list(range(1, 601))
    top = scores.head(k)["example_id"].to_list()
    precision = sum(i in flipped for i in top) / k
    issues = pl.read_csv(out / "label_issues.csv")
    flag_precision = issues["example_id"].is_in(list(flipped)).mean()
    flag_recall = issues["example_id"].is_in(list(flipped)).sum() / k
    print(f"\ntiny model, {k} of 600 labels flipped ({FLIP_RATE:.0%}): precision@{k} = {precision:.3f}; "
          f"flagged {issues.height}, flag precision {flag_precision:.3f}, recall {flag_recall:.3f}")  # fmt: skip
    assert precision >= 0.6 >= 5 * FLIP_RATE
    assert flag_precision >= 0.6 and flag_recall >= 0.5
    # the issue table: cleanlab-style flag and score, label names, the text from the dataset
    assert {"is_label_issue", "label_score", "given_label", "predicted_label", "text"} <= set(issues.columns)
    assert issues["is_label_issue"].all()
    assert set(issues["given_label"]) <= {"negative", "positive"}
    assert (issues["given_label"] != issues["predicted_label"]).all()
    texts = pl.read_csv(tiny_run["csv"]).select("example_id", pl.col("text").alias("expected"))
    joined = issues.join(texts, on="example_id")
    assert joined.height == issues.height and (joined["text"] == joined["expected"]).all()
    assert (
        pl.read_parquet(out / "label_issues.parquet")
        .select(issues.columns)
        .equals(issues.cast(pl.read_parquet(out / "label_issues.parquet").select(issues.columns).schema))
    )
    html = (out / "report.html").read_text()
    assert "Likely label problems" in html and issues["text"][0].split()[0] in html
    summary = json.loads((out / "audit.json").read_text())
    assert summary["dataset"]["matched"] == 600 and summary["label_issues"]["flagged"] == issues.height


# -- the report ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1, 2):
        generate_run(root / f"s{seed}", 2000, 6, seed=seed)
    write_profile([root / f"s{s}" for s in (0, 1, 2)], root / "seeds.parquet")
    write_profile(root / "s0", root / "single.parquet")
    ids = read_profile(root / "single.parquet")["example_id"]
    pl.DataFrame({"example_id": ids, "text": [f"sentence about example {i}" for i in ids]}).write_csv(root / "texts.csv")
    return root


EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:|//|ftp:)""", re.I)


def test_report_with_seeds_and_comparison(seeds, tmp_path):
    out = tmp_path / "audit"
    rep = audit(seeds / "seeds.parquet", out, compare=seeds / "single.parquet", top=5, dataset=str(seeds / "texts.csv"))
    for key in ("html", "markdown", "json", "issues_csv", "issues_parquet", "scores_parquet", "transitions_png"):
        assert rep.files[key].exists(), key
    html = rep.files["html"].read_text()
    assert not EXTERNAL.search(html) and "<link" not in html and "@import" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for heading in ("Subsets of Interest", "By label", "By source", "Data map", "Likely label problems",
                    "Examples forgotten most", "Seed agreement", "SOI transitions"):  # fmt: skip
        assert heading in html, heading
    assert "data:image/png;base64," in html
    s = rep.summary
    assert s["examples"] == 2000 and len(s["runs"]) == 3
    assert sum(v["count"] for v in s["categories"].values()) == 2000
    assert math.isclose(sum(v["share"] for v in s["categories"].values()), 1.0)
    assert {r["group"] for r in s["by_group"]["source"]} == {"news", "reviews", "forums"}
    assert s["seeds"]["runs"] == 3 and 0 < s["seeds"]["unanimous_share"] < 1
    # per modal category: the seed-stable examples are the unanimous ones
    prof = read_profile(seeds / "seeds.parquet")
    for row in s["seeds"]["per_category"]:
        in_cat = prof.filter(pl.col("category") == row["category"])
        assert row["stable"] == in_cat.filter(pl.col("category_agreement") == 1).height
    assert "seed-stable examples" in rep.files["html"].read_text()
    # the examples the runs disagree on most come with their text
    section = html.split('id="seeds"')[1].split('id="transitions"')[0]
    shown = [int(i) for i in re.findall(r"sentence about example (\d+)", section)]
    assert len(shown) == 5
    assert prof.filter(pl.col("example_id").is_in(shown))["category_agreement"].max() < 1
    assert s["transitions"]["joined"] == 2000 and s["transitions"]["only_in_a"] == 0
    assert s["label_issues"]["epochs"] == 18  # 3 runs x 6 epochs
    # capped tables: 5 rows and a count of the rest
    assert "more not shown" in html
    md = rep.files["markdown"].read_text()
    assert "## Seed agreement" in md and "## SOI transitions" in md and "![SOI transitions](transitions.png)" in md
    assert json.loads(rep.files["json"].read_text())["examples"] == 2000


def test_map_is_a_capped_uniform_sample(seeds):
    df = read_profile(seeds / "single.parquet")
    li = find_label_issues(seeds / "single.parquet")
    data = map_data(df, max_points=300, issues=li.scores, max_issues=50)
    assert data["sampled"] and data["n_total"] == 2000
    assert 300 <= data["n_shown"] <= 350 and data["n_shown"] == 300 + data["n_forced"]
    assert len(data["x"]) == len(data["id"]) == len(data["f"]) == data["n_shown"]
    assert all(0 <= v <= 10000 for v in data["x"] + data["y"])
    assert sum(data["cat_counts"]) == 2000
    full = map_data(df, max_points=5000)
    assert not full["sampled"] and full["n_shown"] == 2000


def test_missing_runs_and_unmatched_dataset_warn(seeds, tmp_path):
    shutil.copytree(seeds / "s0", tmp_path / "gone")
    write_profile(tmp_path / "gone", tmp_path / "p.parquet")
    shutil.rmtree(tmp_path / "gone")
    pl.DataFrame({"example_id": [10**9, 10**9 + 1], "text": ["a", "b"]}).write_csv(tmp_path / "other.csv")
    runner = CliRunner()
    result = runner.invoke(main, ["audit", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "a"), "--dataset",
                                  str(tmp_path / "other.csv"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "no longer exists" in result.stderr and "ids do not match" in result.stderr
    assert (tmp_path / "a" / "report.html").exists() and not (tmp_path / "a" / "label_issues.csv").exists()
    # the runs given by hand are used instead
    result = runner.invoke(main, ["audit", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "b"), "--run",
                                  str(seeds / "s0"), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output)["label_issues"]["examples"] == 2000


def test_cli_errors(seeds, tmp_path):
    runner = CliRunner()
    line = one_line_error(runner.invoke(main, ["audit", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "o")]))
    assert "nope.parquet" in line
    bogus = tmp_path / "bogus.parquet"
    bogus.write_bytes(b"PAR1 not really")
    assert "bogus.parquet" in one_line_error(runner.invoke(main, ["audit", str(bogus), "-o", str(tmp_path / "o")]))
    table = tmp_path / "table.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(table)
    assert "not a soicurate profile" in one_line_error(runner.invoke(main, ["audit", str(table)]))
    line = one_line_error(runner.invoke(main, ["audit", str(seeds / "single.parquet"), "-o", str(tmp_path / "o"),
                                               "--run", str(tmp_path / "no-run")]))  # fmt: skip
    assert "no-run" in line
    disjoint = tmp_path / "disjoint.parquet"
    (read_profile(seeds / "single.parquet").with_columns(pl.col("example_id") + 10**9)
     .with_columns(pl.col("category").cast(pl.String), pl.col("region").cast(pl.String)).write_parquet(disjoint))  # fmt: skip
    line = one_line_error(runner.invoke(main, ["audit", str(seeds / "single.parquet"), "-o", str(tmp_path / "o"),
                                               "--compare", str(disjoint)]))  # fmt: skip
    assert "no example_id in common" in line
    assert not (tmp_path / "o").exists()  # bad input: nothing written


def test_relative_run_paths_resolve_from_the_profile(tmp_path, monkeypatch):
    """`soicurate profile run -o p.parquet` stores the run path as typed; an audit started from
    another directory still finds the run next to the profile."""
    monkeypatch.chdir(tmp_path)
    generate_run("run", 300, 4)
    write_profile("run", "p.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rep = audit(tmp_path / "p.parquet", "out")
    assert rep.issues is not None and rep.issues.scores.height == 300 and not rep.warnings
