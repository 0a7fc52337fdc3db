"""Push a curated folder to the Hugging Face Hub, through huggingface_hub and datasets only.

Two commits to a dataset repository:

1. the dataset card (README.md, its load example pointing at the repository) and the
   provenance files `soicurate/ids.txt` and `soicurate/selection.parquet` (HfApi.create_commit);
2. `DatasetDict.push_to_hub`: the rows as Parquet shards under `data/`, and the card's YAML
   updated with `dataset_info` and `configs` (datasets keeps the rest of the card).

The token comes from `--token-env VAR`, else where huggingface_hub looks (HF_TOKEN, then the
token stored by `hf auth login`). It is never printed, logged or written: error messages are
scrubbed of it. The endpoint is huggingface_hub's (HF_ENDPOINT, default https://huggingface.co).
"""

from __future__ import annotations

import os
from pathlib import Path

from soicurate.errors import SoicurateError, UsageError

SOICURATE_DIR_IN_REPO = "soicurate"


class HubError(SoicurateError):
    """Pushing to the Hub failed (no token, refused token, unreachable endpoint, ...)."""


def endpoint() -> str:
    """The Hub endpoint datasets and huggingface_hub will talk to."""
    try:
        from datasets import config

        return str(config.HF_ENDPOINT).rstrip("/")
    except Exception:  # datasets missing: huggingface_hub's constant
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")


def resolve_token(token_env: str | None = None) -> str:
    """The token to push with: $token_env when given, else huggingface_hub's (HF_TOKEN, stored login)."""
    if token_env:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise HubError(f"--token-env {token_env}: that environment variable is not set or empty")
        return value
    from huggingface_hub import get_token

    value = (get_token() or "").strip()
    if not value:
        raise HubError(
            "no Hugging Face token: set HF_TOKEN, log in with `hf auth login`, or name a variable with --token-env"
        )
    return value


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = str(repo_id).strip()
    if repo_id.count("/") > 1:
        raise UsageError(f"repository id {repo_id!r}: expected NAME or NAMESPACE/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"repository id {repo_id!r} is not valid ({str(exc).splitlines()[0]})") from None
    return repo_id


def push_curated(
    curated_dir,
    repo_id: str,
    *,
    private: bool | None = None,
    token_env: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    progress: bool = False,
) -> dict:
    """Push the curated folder `curated_dir` (written by `soicurate curate`) to the dataset
    repository `repo_id`; returns the repository id, its URL and the commit."""
    from soicurate.curation.card import card_for_repo
    from soicurate.curation.writer import CARD_NAME, DATASET_SUBDIR, IDS_NAME, SELECTION_NAME

    curated_dir = Path(curated_dir)
    card_path = curated_dir / CARD_NAME
    dataset_dir = curated_dir / DATASET_SUBDIR
    if not curated_dir.is_dir():
        raise UsageError(f"{curated_dir}: no such curated folder (write one with `soicurate curate`)")
    for needed in (card_path, dataset_dir / "dataset_dict.json"):
        if not needed.exists():
            raise UsageError(f"{curated_dir}: not a curated folder ({needed.relative_to(curated_dir)} is missing)")
    repo_id = check_repo_id(repo_id)
    token = token or resolve_token(token_env)
    url = endpoint()
    from soicurate.curation.writer import quiet_progress

    try:
        with quiet_progress(not progress):
            return _push(curated_dir, repo_id, token=token, private=private, url=url, progress=progress,
                         commit_message=commit_message, card_for_repo=card_for_repo,
                         names=(CARD_NAME, DATASET_SUBDIR, IDS_NAME, SELECTION_NAME))  # fmt: skip
    except SoicurateError as exc:
        raise type(exc)(_scrub(str(exc), token)) from None
    except Exception as exc:
        raise HubError(_scrub(describe_hub_error(exc, url, repo_id), token)) from None


def _push(curated_dir: Path, repo_id: str, *, token, private, url, progress, commit_message, card_for_repo, names):
    import datasets
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi

    from soicurate import __version__

    card_name, dataset_subdir, ids_name, selection_name = names
    api = HfApi(endpoint=url, token=token, library_name="soicurate", library_version=__version__)
    if "/" not in repo_id:  # the Hub puts a bare name under the token's user; say which
        repo_id = f"{api.whoami()['name']}/{repo_id}"
    repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    repo_id = getattr(repo, "repo_id", None) or repo_id

    # Commit 1: the card (without `configs`: datasets writes the Hub's shard pattern) + provenance.
    card = DatasetCard(card_for_repo((curated_dir / card_name).read_text(encoding="utf-8"), repo_id))
    card.data.configs = None
    operations = [CommitOperationAdd(path_in_repo=card_name, path_or_fileobj=str(card).encode("utf-8"))]
    for name in (ids_name, selection_name):
        if (curated_dir / name).is_file():
            operations.append(CommitOperationAdd(path_in_repo=f"{SOICURATE_DIR_IN_REPO}/{name}",
                                                 path_or_fileobj=str(curated_dir / name)))  # fmt: skip
    api.create_commit(repo_id, operations=operations, repo_type="dataset",
                      commit_message="soicurate: dataset card and selection provenance")  # fmt: skip

    # Commit 2: the rows, through datasets (Parquet shards + dataset_info/configs in the card).
    dd = datasets.load_from_disk(str(curated_dir / dataset_subdir))
    info = dd.push_to_hub(repo_id, private=private, token=token,
                          commit_message=commit_message or f"soicurate {__version__}: curated subset")  # fmt: skip
    return {
        "repo_id": repo_id,
        "url": f"{url}/datasets/{repo_id}",
        "endpoint": url,
        "commit": getattr(info, "oid", None),
        "commit_url": getattr(info, "commit_url", None),
        "private": private,
        "splits": {k: len(v) for k, v in dd.items()},
    }


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return text


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe_hub_error(exc: Exception, url: str, repo_id: str) -> str:
    """One line for a failed push: refused token, no access, unreachable endpoint, offline mode."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    for e in _chain(exc):
        if isinstance(e, OfflineModeIsEnabled):
            return f"cannot push to {url}: offline mode is on (HF_HUB_OFFLINE); unset it to push"
    for e in _chain(exc):
        if isinstance(e, HfHubHTTPError) and getattr(e, "response", None) is not None:
            status = e.response.status_code
            if status == 401:
                return (f"{url} refused the token (401 Unauthorized): check that HF_TOKEN, your `hf auth login` "
                        "token or --token-env holds a valid token with write access")  # fmt: skip
            if status == 403:
                return f"{url}: the token has no write access to {repo_id} (403 Forbidden)"
            if status == 404:
                return f"{url}: repository {repo_id} not found (404), and it could not be created"
            server = e.response.headers.get("X-Error-Message") or str(e).splitlines()[0]
            return f"{url}: pushing {repo_id} failed with HTTP {status} ({server})"
    for e in _chain(exc):
        name = type(e).__name__
        if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
                    "RemoteProtocolError") or isinstance(e, (ConnectionError, TimeoutError)):  # fmt: skip
            reason = str(e).splitlines()[0] if str(e) else name
            return f"cannot reach the Hub at {url} ({reason}); check HF_ENDPOINT and your network"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"pushing {repo_id} to {url} failed: {type(exc).__name__}: {text}"
