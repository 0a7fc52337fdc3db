"""`soicurate curate`: every selection mode against hand-computed expectations, the curated
folder (dataset round trip, Parquet/JSONL copies, id list, selection rows, card YAML), and bad
input as one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from soicurate.cli import main
from soicurate.curation.card import front_matter
from soicurate.curation.selection import SelectionRule, select
from soicurate.errors import UsageError
from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES

# ----------------------------------------------------------------------------------------------
# A hand-built profile: 12 examples, ids 10..21 (not row numbers, to catch index/id mix-ups).
#   id label category        region         conf  var   fe  agreement
ROWS = [
    (10, 0, "always_correct", "easy_to_learn", 0.95, 0.02, 0, 1.0),
    (11, 1, "always_correct", "easy_to_learn", 0.90, 0.05, 0, 1.0),
    (12, 0, "learned_early", "ambiguous", 0.70, 0.30, 0, 0.5),
    (13, 1, "learned_late", "hard_to_learn", 0.30, 0.10, 0, 1.0),
    (14, 0, "forgettable", "ambiguous", 0.60, 0.35, 2, 1.0),
    (15, 1, "forgettable", "easy_to_learn", 0.80, 0.12, 1, 0.5),
    (16, 0, "forgotten", "ambiguous", 0.50, 0.40, 3, 1.0),
    (17, 1, "forgotten", "hard_to_learn", 0.35, 0.15, 1, 1.0),
    (18, 0, "unlearned", "hard_to_learn", 0.10, 0.05, 0, 1.0),
    (19, 1, "unlearned", "hard_to_learn", 0.20, 0.08, 0, 0.5),
    (20, 0, "learned_early", "ambiguous", 0.65, 0.32, 0, 1.0),
    (21, 0, "forgettable", "ambiguous", 0.55, 0.38, 2, 1.0),
]


@pytest.fixture(scope="module")
def hand():
    cols = list(zip(*ROWS))
    return pl.DataFrame({
        "example_id": pl.Series(cols[0], dtype=pl.Int64),
        "label": pl.Series(cols[1], dtype=pl.Int32),
        "label_name": [("negative", "positive")[x] for x in cols[1]],
        "confidence": cols[4],
        "variability": cols[5],
        "forgetting_events": pl.Series(cols[6], dtype=pl.Float64),
        "category": pl.Series(cols[2], dtype=pl.Enum(CATEGORIES)),
        "region": pl.Series(cols[3], dtype=pl.Enum(REGIONS)),
        "category_agreement": cols[7],
    })  # fmt: skip


def ids(sel):
    return sel.rows["example_id"].to_list()


def test_category_and_region_picks_are_a_union(hand):
    assert ids(select(hand, categories=["forgettable"])) == [14, 15, 21]
    assert ids(select(hand, categories=["forgettable", "forgotten"])) == [14, 15, 16, 17, 21]
    assert ids(select(hand, regions=["ambiguous"])) == [12, 14, 16, 20, 21]
    sel = select(hand, categories=["forgettable", "forgotten"], regions=["ambiguous"])
    assert ids(sel) == [12, 14, 15, 16, 17, 20, 21]
    assert ids(select(hand, categories=["forgettable,forgotten"])) == [14, 15, 16, 17, 21]  # comma list
    assert ids(select(hand)) == list(range(10, 22))  # no pick: everything


def test_quantiles_over_the_whole_profile(hand):
    # top 25% of 12 = 3 most variable: 0.40 (16), 0.38 (21), 0.35 (14)
    assert ids(select(hand, top=["variability:0.25"])) == [14, 16, 21]
    # bottom 25% confidence: 0.10 (18), 0.20 (19), 0.30 (13)
    assert ids(select(hand, bottom=[("confidence", 0.25)])) == [13, 18, 19]
    # ceil(0.3 x 12) = 4: 3 (16), 2 (14), 2 (21), then a tie at 1 between 15 and 17 -> smaller id
    assert ids(select(hand, top=["forgetting_events:0.3"])) == [14, 15, 16, 21]
    # quantiles are computed over the whole profile, not over the category pick
    assert ids(select(hand, categories=["unlearned"], top=["variability:0.25"])) == []
    # two quantiles AND: 6 most variable {12,14,16,17,20,21} and 6 least confident {13,16,17,18,19,21}
    assert ids(select(hand, top=["variability:0.5"], bottom=["confidence:0.5"])) == [16, 17, 21]


def test_where_is_sql_over_the_columns(hand):
    assert ids(select(hand, where="confidence < 0.5 AND forgetting_events >= 1")) == [17]
    assert ids(select(hand, where="category IN ('unlearned', 'learned_late') AND label_name = 'positive'")) == [13, 19]
    assert ids(select(hand, where="region LIKE 'hard%' OR example_id = 10")) == [10, 13, 17, 18, 19]


def test_min_agreement(hand):
    assert ids(select(hand, min_agreement=0.8)) == [10, 11, 13, 14, 16, 17, 18, 20, 21]
    with pytest.raises(UsageError, match="several runs"):
        select(hand.drop("category_agreement"), min_agreement=0.8)


def test_balance_labels_is_seeded_and_balanced(hand):
    sel = select(hand, balance_labels=True, seed=3)
    labels = sel.rows["label"].to_list()
    assert labels.count(0) == labels.count(1) == 5  # 7 negatives downsampled to the 5 positives
    assert set(sel.rows.filter(pl.col("label") == 1)["example_id"]) == {11, 13, 15, 17, 19}
    assert ids(select(hand, balance_labels=True, seed=3)) == ids(sel)
    assert len({tuple(ids(select(hand, balance_labels=True, seed=s))) for s in range(6)}) > 1


def test_max_examples_is_a_seeded_random_cap(hand):
    sel = select(hand, max_examples=5, seed=1)
    assert len(sel) == 5 and set(ids(sel)) <= set(range(10, 22)) and ids(sel) == sorted(ids(sel))
    assert ids(select(hand, max_examples=5, seed=1)) == ids(sel)
    assert ids(select(hand, max_examples=50)) == list(range(10, 22))
    # with balance, the cap is per label: floor(4 / 2) = 2 each
    both = select(hand, balance_labels=True, max_examples=4, seed=0)
    assert sorted(both.rows["label"].to_list()) == [0, 0, 1, 1]


def test_all_modes_combined(hand):
    sel = select(hand, SelectionRule(
        categories=["forgettable", "forgotten"], regions=["ambiguous"],  # {12,14,15,16,17,20,21}
        top=["variability:0.5"],  # 6 most variable: 16 21 14 20 12 17 -> {12,14,16,17,20,21}
        where="confidence < 0.7",  # drops 12 (0.70) -> {14,16,17,20,21}
        min_agreement=0.8,  # all 1.0 -> unchanged
        balance_labels=True,  # one positive (17) -> 17 + one of {14,16,20,21}
        max_examples=10, seed=7,
    ))  # fmt: skip
    assert [s["remaining"] for s in sel.steps] == [7, 6, 5, 5, 2]
    assert [s["step"] for s in sel.steps] == ["pick", "top", "where", "agreement", "balance"]
    got = ids(sel)
    assert len(got) == 2 and 17 in got and (set(got) - {17}) <= {14, 16, 20, 21}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"categories": ["forgetable"]}, "unknown category 'forgetable'"),
        ({"regions": ["fuzzy"]}, "unknown region 'fuzzy'"),
        ({"top": ["variability"]}, "METRIC:FRACTION"),
        ({"top": ["variability:1.5"]}, "fraction must be in"),
        ({"bottom": ["label_name:0.5"]}, "cannot rank by 'label_name'"),
        ({"top": ["nosuch:0.5"]}, "no profile column 'nosuch'"),
        ({"where": "confidence <<>> 1"}, "--where"),
        ({"where": "nosuch > 1"}, "nosuch"),
        ({"where": "confidence"}, "--where"),
        ({"where": "confidence < 0.5; DROP TABLE x"}, "--where"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"max_examples": 0}, "max_examples"),
    ],
)
def test_bad_selection_options(hand, options, message):
    with pytest.raises(UsageError, match=message):
        select(hand, **options)


def test_rule_describes_itself():
    rule = SelectionRule(categories=["forgotten"], regions=["ambiguous"], top=["variability:0.33"],
                         where="confidence < 0.5", balance_labels=True, seed=4)  # fmt: skip
    assert rule.describe() == ('--category forgotten --region ambiguous --top variability:0.33 '
                               '--where "confidence < 0.5" --balance-labels --seed 4')  # fmt: skip


# ----------------------------------------------------------------------------------------------
# End to end on a synthetic run (200 examples) and the CSV it "trained" on.
N = 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import soicurate
    from soicurate.recording.synthetic import generate_run

    root = tmp_path_factory.mktemp("curate")
    generate_run(root / "run0", N, 6, seed=0)
    generate_run(root / "run1", N, 6, seed=1)
    soicurate.write_profile(root / "run0", root / "profile.parquet")
    soicurate.write_profile([root / "run0", root / "run1"], root / "seeds.parquet")
    prof = soicurate.read_profile(root / "profile.parquet")
    # The source: an integer `id` column (the trainer uses it as example_id), text, string label.
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, lab in zip(prof["example_id"], prof["label_name"]):
            w.writerow([i, f"example number {i}", lab])
    with open(root / "half.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, lab in list(zip(prof["example_id"], prof["label_name"]))[: N // 2]:
            w.writerow([i, f"example number {i}", lab])
    run_id = json.loads((root / "run0" / "manifest.json").read_text())["run_id"]
    return {"root": root, "profile": root / "profile.parquet", "seeds": root / "seeds.parquet",
            "csv": root / "train.csv", "half": root / "half.csv", "df": prof, "run_id": run_id}  # fmt: skip


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_curate_cli_writes_the_curated_folder(world, tmp_path):
    out = tmp_path / "hard"
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out,
               "--category", "forgettable", "--category", "forgotten", "--region", "ambiguous", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output + r.stderr
    summary = json.loads(r.stdout)

    df = world["df"]
    expected = df.filter(pl.col("category").cast(pl.String).is_in(["forgettable", "forgotten"])
                         | (pl.col("region").cast(pl.String) == "ambiguous"))  # fmt: skip
    exp_ids = expected["example_id"].to_list()
    assert 0 < len(exp_ids) < N and summary["selected"] == len(exp_ids)

    # the id list
    assert (out / "ids.txt").read_text().split() == [str(i) for i in exp_ids]
    # the dataset round trip: the same rows as the source CSV, plus example_id
    import datasets

    src = pl.read_csv(world["csv"]).filter(pl.col("id").is_in(exp_ids))
    dd = datasets.load_from_disk(str(out / "dataset"))
    assert list(dd) == ["train"]
    got = pl.from_arrow(dd["train"].data.table)
    assert got.columns == ["id", "text", "label", "example_id"]
    assert got.select("id", "text", "label").equals(src)
    assert got["example_id"].to_list() == got["id"].to_list()
    assert pl.read_parquet(out / "data" / "train.parquet").equals(got)
    assert pl.read_ndjson(out / "data" / "train.jsonl").select("id", "text", "label").equals(src)
    # the selected profile rows, readable as a profile
    import soicurate

    sel = soicurate.read_profile(out / "selection.parquet")
    assert sel.equals(expected)

    # the card: YAML parsed back with yaml.safe_load
    text = (out / "README.md").read_text()
    meta = front_matter(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    s = meta["soicurate"]
    cat_counts = dict(expected["category"].cast(pl.String).value_counts().rows())
    assert s["counts"]["category"] == {c: cat_counts.get(c, 0) for c in CATEGORIES}
    assert s["counts"]["label"] == {
        lab: int((expected["label_name"] == lab).sum()) for lab in ("negative", "positive")
    }
    assert s["counts"]["region"]["ambiguous"] == int((expected["region"].cast(pl.String) == "ambiguous").sum())
    assert s["counts"]["total"] == len(exp_ids)
    assert s["selection"]["rule"] == "--category forgettable --category forgotten --region ambiguous"
    assert s["selection"]["options"]["categories"] == ["forgettable", "forgotten"]
    assert s["source"]["dataset"] == "train.csv" and s["source"]["split"] == "train" and s["source"]["num_rows"] == N
    assert s["source"]["fingerprint"]
    assert s["dynamics"]["runs"][0]["run_id"] == world["run_id"] and s["dynamics"]["runs"][0]["seed"] == 0
    assert s["version"] == soicurate.__version__
    assert meta["license"] == "unknown" and "license could not be determined" in s["license_note"]
    assert meta["task_categories"] == ["text-classification"] and meta["size_categories"] == ["n<1K"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train.parquet"
    # the body a person reads
    assert "| forgettable |" in text and "load_from_disk(\"hard/dataset\")" in text
    assert "arXiv:2507.15236" in text and "arXiv:2009.10795" in text
    assert str(world["root"]) not in text  # no local paths in a shareable card
    assert leftovers(tmp_path) == []


def test_curated_folder_loads_with_load_dataset(world, tmp_path):
    """The card's `configs` make the folder itself loadable like a Hub repository."""
    import datasets

    from soicurate.curation import curate

    out = tmp_path / "amb"
    sub = curate(world["profile"], str(world["csv"]), regions=["ambiguous"], output_dir=out)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds["example_id"] == sub["example_id"] and len(ds) == len(sub)


def test_python_api_returns_a_dataset_and_writes_nothing(world, tmp_path, monkeypatch):
    from soicurate.curation import curate

    monkeypatch.chdir(tmp_path)
    ds = curate(world["profile"], str(world["csv"]), bottom=["confidence:0.1"])
    df = world["df"]
    k = int(np.ceil(0.1 * N))
    exp = df.sort(["confidence", "example_id"]).head(k)["example_id"].sort().to_list()
    assert sorted(ds["example_id"]) == exp and len(ds) == k
    assert list(tmp_path.iterdir()) == []


def test_min_agreement_on_a_seeds_profile(world, tmp_path):
    import soicurate

    seeds = soicurate.read_profile(world["seeds"])
    picked = seeds.filter(pl.col("category").cast(pl.String).is_in(["forgettable", "learned_early"]))
    exp = picked.filter(pl.col("category_agreement") >= 1.0)
    assert 0 < exp.height < picked.height  # the threshold does something here
    out = tmp_path / "agree"
    r = invoke("curate", world["seeds"], "--dataset", world["csv"], "-o", out, "--category", "forgettable",
               "--category", "learned_early", "--min-agreement", "1", "-q")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert (out / "ids.txt").read_text().split() == [str(i) for i in exp["example_id"]]
    meta = front_matter((out / "README.md").read_text())["soicurate"]
    assert len(meta["dynamics"]["runs"]) == 2 and meta["selection"]["options"]["min_agreement"] == 1.0
    assert [st["remaining"] for st in meta["selection"]["steps"]] == [picked.height, exp.height]


def test_balanced_and_capped(world, tmp_path):
    out = tmp_path / "bal"
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out, "--balance-labels",
               "--max-examples", "40", "--seed", "5", "-q")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    meta = front_matter((out / "README.md").read_text())["soicurate"]
    assert meta["counts"]["label"] == {"negative": 20, "positive": 20}
    r2 = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", tmp_path / "bal2", "--balance-labels",
                "--max-examples", "40", "--seed", "5", "-q")  # fmt: skip
    assert r2.exit_code == 0 and (tmp_path / "bal2" / "ids.txt").read_text() == (out / "ids.txt").read_text()


def test_license_is_inherited(world, tmp_path):
    import datasets

    df = world["df"]
    rows = {"id": df["example_id"].to_list(), "text": ["t"] * N, "label": df["label_name"].to_list()}
    with_info = tmp_path / "with_info"
    datasets.Dataset.from_dict(rows, info=datasets.DatasetInfo(license="mit")).save_to_disk(str(with_info))
    with_card = tmp_path / "with_card"
    datasets.Dataset.from_dict(rows).save_to_disk(str(with_card))
    (with_card / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# A dataset\n")
    for src, lic, where in ((with_info, "mit", "dataset info"), (with_card, "cc-by-4.0", "dataset card")):
        out = tmp_path / f"out_{src.name}"
        r = invoke("curate", world["profile"], "--dataset", src, "-o", out, "--category", "unlearned,forgotten", "-q")
        assert r.exit_code == 0, r.stderr
        meta = front_matter((out / "README.md").read_text())
        assert meta["license"] == lic and meta["soicurate"]["license_source"] == where
        assert "license_note" not in meta["soicurate"]
        assert datasets.load_from_disk(str(out / "dataset"))["train"].info.license == lic


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--category", "forgetable"], "unknown category 'forgetable'"),
        (["--region", "middle"], "unknown region 'middle'"),
        (["--where", "confidence <<>> 1"], "--where"),
        (["--where", "nosuch_column > 1"], "nosuch_column"),
        (["--top", "variability:2"], "fraction must be in"),
        (["--min-agreement", "0.8"], "several runs"),
        (["--category", "unlearned", "--where", "confidence > 2"], "keeps none"),
        (["--dataset-missing"], "dataset not found"),
        (["--dataset-half"], "100 of the profile's 200 example ids are not in split 'train'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(world, tmp_path, extra, message):
    dataset = world["csv"]
    if extra == ["--dataset-missing"]:
        dataset, extra = tmp_path / "nope" / "train.csv", []
    elif extra == ["--dataset-half"]:
        dataset, extra = world["half"], []
    out = tmp_path / "out"
    r = invoke("curate", world["profile"], "--dataset", dataset, "-o", out, *extra, "-q")
    assert r.exit_code == 2, r.output + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_missing_profile_and_existing_output(world, tmp_path):
    r = invoke("curate", tmp_path / "none.parquet", "--dataset", world["csv"], "-o", tmp_path / "o")
    assert r.exit_code == 2 and "none.parquet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out, "--category", "unlearned")
    assert r.exit_code == 2 and "already exists" in r.stderr and (out / "keep.txt").read_text() == "mine"
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out, "--category", "forgotten",
               "--overwrite", "-q")  # fmt: skip
    assert r.exit_code == 0 and not (out / "keep.txt").exists() and (out / "README.md").exists()


def test_a_failure_while_writing_leaves_no_folder(world, tmp_path, monkeypatch):
    from soicurate.curation import curate, writer

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_selection_table", boom)
    with pytest.raises(OSError, match="disk full"):
        curate(world["profile"], str(world["csv"]), categories=["forgotten"], output_dir=tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_human_summary(world, tmp_path):
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", tmp_path / "o", "--top", "variability:0.1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("selected 20 of 200 examples: --top variability:0.1") and "wrote " in r.stdout
