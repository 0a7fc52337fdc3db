"""`soicurate push` and `curate --push-to` against a local stand-in for the Hub API
(tests/hub_standin.py on 127.0.0.1): the round trip (what was uploaded is what was curated,
read back with datasets.load_dataset), and one-line errors for a missing token, a refused
token (401) and an unreachable endpoint. The token is never printed or written."""

from __future__ import annotations

import csv
import io
import json
import socket

import polars as pl
import pytest
from click.testing import CliRunner
from hub_standin import HubStandIn

from soicurate.cli import main
from soicurate.curation.card import REPO_PLACEHOLDER, front_matter

N = 120
# huggingface_hub itself passes bytes as `data=` to its HTTP client; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def point_hub_at(monkeypatch, url: str, tmp_path) -> None:
    """Make huggingface_hub and datasets talk to `url` (their endpoints are read at import time),
    online, over plain HTTP uploads (the stand-in emulates LFS, not Xet), with no stored token
    and caches under tmp_path."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hconst, "ENDPOINT", url)
    monkeypatch.setattr(hconst, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hconst, "HF_URL_HOSTS", frozenset(hconst.HF_URL_HOSTS | {"127.0.0.1"}))
    monkeypatch.setattr(hconst, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hconst, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hconst, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hconst, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hconst, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(dconfig, "HF_ENDPOINT", url)
    monkeypatch.setattr(dconfig, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dconfig, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(dconfig, "DOWNLOADED_DATASETS_PATH", tmp_path / "datasets-cache" / "downloads")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubStandIn(max_requests=300, lifetime_s=120) as standin:
        point_hub_at(monkeypatch, standin.url, tmp_path)
        monkeypatch.setenv("HF_TOKEN", standin.token)
        yield standin


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import soicurate
    from soicurate.curation import run_curation
    from soicurate.recording.synthetic import generate_run

    root = tmp_path_factory.mktemp("push")
    generate_run(root / "run", N, 5, seed=0)
    soicurate.write_profile(root / "run", root / "profile.parquet")
    prof = soicurate.read_profile(root / "profile.parquet")
    with open(root / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        for i, lab in zip(prof["example_id"], prof["label_name"]):
            w.writerow([i, f"sentence {i}", lab])
    curated = root / "curated"
    run_curation(root / "profile.parquet", str(root / "train.csv"), regions=["ambiguous"], output_dir=curated)
    return {"root": root, "profile": root / "profile.parquet", "csv": root / "train.csv", "curated": curated}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_push_round_trip(hub, world, tmp_path):
    import datasets

    curated = world["curated"]
    r = invoke("push", curated, "alice/ambiguous-subset", "--private", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    info = json.loads(r.stdout)
    assert info["repo_id"] == "alice/ambiguous-subset" and info["url"] == f"{hub.url}/datasets/alice/ambiguous-subset"

    repo = hub.repo("alice/ambiguous-subset")
    assert repo.private is True
    files = repo.files()
    uploaded = {"README.md", "soicurate/ids.txt", "soicurate/selection.parquet", "data/train-00000-of-00001.parquet"}
    assert uploaded <= set(files)
    assert files["soicurate/ids.txt"] == (curated / "ids.txt").read_bytes()
    assert files["soicurate/selection.parquet"] == (curated / "selection.parquet").read_bytes()
    local_rows = pl.read_parquet(curated / "data" / "train.parquet")
    assert pl.read_parquet(io.BytesIO(files["data/train-00000-of-00001.parquet"])).equals(local_rows)

    # The card: our metadata and body, plus what datasets adds (dataset_info, configs).
    local_card = (curated / "README.md").read_text()
    pushed_card = files["README.md"].decode()
    pushed, local = front_matter(pushed_card), front_matter(local_card)
    assert pushed["soicurate"] == local["soicurate"] and pushed["license"] == local["license"]
    assert pushed["dataset_info"]["splits"][0]["num_examples"] == local_rows.height
    assert pushed["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert 'load_dataset("alice/ambiguous-subset"' in pushed_card and REPO_PLACEHOLDER not in pushed_card
    body = pushed_card.split("\n---\n", 1)[1]
    assert body.replace("alice/ambiguous-subset", REPO_PLACEHOLDER) == local_card.split("\n---\n", 1)[1]
    assert hub.validated_cards  # create_commit had the card's YAML checked

    # Read it back the way a user would, through the (stand-in) Hub.
    back = datasets.load_dataset("alice/ambiguous-subset", split="train", cache_dir=str(tmp_path / "ds-cache"))
    assert pl.from_arrow(back.data.table).equals(local_rows)

    # The token went to the server, and nowhere else.
    assert f"Bearer {hub.token}" in hub.seen_authorization
    assert hub.token not in r.output + r.stderr and hub.token not in pushed_card
    assert all(hub.token.encode() not in p.read_bytes() for p in curated.rglob("*") if p.is_file())


def test_curate_with_push_to(hub, world, tmp_path):
    out = tmp_path / "forgotten"
    r = invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out, "--category", "forgotten,forgettable",
               "--push-to", "bob/forgotten", "--public")  # fmt: skip
    assert r.exit_code == 0, r.output + r.stderr
    assert f"pushed to {hub.url}/datasets/bob/forgotten" in r.stdout and hub.token not in r.output + r.stderr
    repo = hub.repo("bob/forgotten")
    assert repo.private is False
    assert repo.files()["soicurate/ids.txt"] == (out / "ids.txt").read_bytes()


def test_bare_repo_name_goes_under_the_token_user(hub, world):
    r = invoke("push", world["curated"], "plain-name", "-q")
    assert r.exit_code == 0, r.stderr
    assert "README.md" in hub.repo("standin-user/plain-name").files()


def test_stored_login_token_is_used(hub, world, tmp_path, monkeypatch):
    import huggingface_hub.constants as hconst

    monkeypatch.delenv("HF_TOKEN")
    stored = tmp_path / "stored-token"
    stored.write_text(hub.token)
    monkeypatch.setattr(hconst, "HF_TOKEN_PATH", str(stored))
    r = invoke("push", world["curated"], "carol/from-login", "-q")
    assert r.exit_code == 0, r.stderr
    assert ("dataset", "carol/from-login") in hub.repos


def test_token_env(hub, world, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("MY_WRITE_TOKEN", hub.token)
    r = invoke("push", world["curated"], "dan/env", "--token-env", "MY_WRITE_TOKEN", "-q")
    assert r.exit_code == 0, r.stderr
    line = one_error_line(invoke("push", world["curated"], "dan/env2", "--token-env", "UNSET_TOKEN_VAR"))
    assert "--token-env UNSET_TOKEN_VAR" in line


def test_missing_token(hub, world, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    line = one_error_line(invoke("push", world["curated"], "erin/none"))
    assert "no Hugging Face token" in line and "HF_TOKEN" in line
    assert not hub.repos
    # curate --push-to checks the token before it writes anything
    out = tmp_path / "never"
    line = one_error_line(invoke("curate", world["profile"], "--dataset", world["csv"], "-o", out, "--category",
                                 "forgotten", "--push-to", "erin/none"))  # fmt: skip
    assert "no Hugging Face token" in line and not out.exists()


def test_refused_token_is_a_401_line(hub, world, monkeypatch):
    wrong = "hf_wrong_token_that_must_not_leak"
    monkeypatch.setenv("HF_TOKEN", wrong)
    r = invoke("push", world["curated"], "frank/refused")
    line = one_error_line(r)
    assert "401" in line and "refused the token" in line and hub.url in line
    assert wrong not in r.output + r.stderr
    assert f"Bearer {wrong}" in hub.seen_authorization and not hub.repos


def test_unreachable_endpoint(world, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    point_hub_at(monkeypatch, url, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_some_token_value")
    r = invoke("push", world["curated"], "gina/unreachable")
    line = one_error_line(r)
    assert f"cannot reach the Hub at {url}" in line and "hf_some_token_value" not in r.output + r.stderr


def test_curate_from_a_hub_dataset(hub, world, tmp_path):
    """A Hub source: loaded and id'd as the trainer does, its revision and card license recorded."""
    import datasets
    from huggingface_hub import HfApi

    rows = pl.read_csv(world["csv"]).to_dict(as_series=False)
    api = HfApi(endpoint=hub.url, token=hub.token)
    api.create_repo("owner/source", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"---\nlicense: apache-2.0\n---\n# The source\n", path_in_repo="README.md",
                    repo_id="owner/source", repo_type="dataset")  # fmt: skip
    datasets.Dataset.from_dict(rows).push_to_hub("owner/source", token=hub.token)
    head = hub.repo("owner/source").head

    out = tmp_path / "from-hub"
    r = invoke("curate", world["profile"], "--dataset", "owner/source", "-o", out, "--region", "hard_to_learn", "-q")
    assert r.exit_code == 0, r.output + r.stderr
    meta = front_matter((out / "README.md").read_text())
    src = meta["soicurate"]["source"]
    assert src["dataset"] == "owner/source" and src["kind"] == "hub" and src["revision"] == head
    assert meta["license"] == "apache-2.0" and meta["soicurate"]["license_source"] == "dataset card"
    assert meta["source_datasets"] == ["owner/source"]
    import soicurate

    hard = soicurate.read_profile(world["profile"]).filter(pl.col("region").cast(pl.String) == "hard_to_learn")
    assert (out / "ids.txt").read_text().split() == [str(i) for i in hard["example_id"]]


def test_bad_push_arguments(hub, world, tmp_path):
    assert "repository id" in one_error_line(invoke("push", world["curated"], "a/b/c"))
    assert "no such curated folder" in one_error_line(invoke("push", tmp_path / "missing", "h/x"))
    (tmp_path / "empty").mkdir()
    assert "not a curated folder" in one_error_line(invoke("push", tmp_path / "empty", "h/x"))
    assert not hub.repos


def test_standin_is_bounded():
    """The stand-in listens on 127.0.0.1 only, answers a bounded number of requests, and stops by itself."""
    import time
    import urllib.error
    import urllib.request

    with HubStandIn(max_requests=2, lifetime_s=30) as standin:
        assert standin.url.startswith("http://127.0.0.1:")
        req = lambda: urllib.request.urlopen(urllib.request.Request(  # noqa: E731
            standin.url + "/api/whoami-v2", headers={"Authorization": f"Bearer {standin.token}"}), timeout=5)
        assert json.loads(req().read())["name"] == "standin-user"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(standin.url + "/api/whoami-v2", timeout=5)
        with pytest.raises(urllib.error.HTTPError, match="503"):  # budget spent: it answers 503 and stops
            req()
        for _ in range(100):
            if standin._server_to_close is None:
                break
            time.sleep(0.05)
        with pytest.raises(OSError):
            req()
    short = HubStandIn(lifetime_s=0.2).start()
    time.sleep(0.6)
    assert short._server_to_close is None  # the timer stopped it
