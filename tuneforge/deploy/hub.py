"""The Hugging Face Hub side of a deployment, through `huggingface_hub`: the version's model
folder (adapter or full model, with its model card README.md) committed to a repository,
every file read back at the new commit and compared with the registry's SHA-256, the model
loaded from what came back, and, when that fails, a commit that puts back the files the
repository had before (or the repository removed, if the deployment created it).

The token comes from the server's environment (`HF_TOKEN`), never from a request: job specs
are stored and listed."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import DeploymentError
from tuneforge.jobs.reporting import JobReporter
from tuneforge.registry.models import resolve_model
from tuneforge.registry.versions import sha256_of

GITATTRIBUTES = ".gitattributes"


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content, as the Hub lists it for files kept in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubRepo:
    """One repository on one hub; every failure to reach it is a DeploymentError naming the
    endpoint."""

    def __init__(self, endpoint: str, repo_id: str, revision: str, token: str | None):
        from huggingface_hub import HfApi

        self.endpoint, self.repo_id, self.revision, self.token = endpoint, repo_id, revision, token
        self.api = HfApi(endpoint=endpoint, token=token or False)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx
        import httpx2  # huggingface_hub 2's HTTP client
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        try:
            return fn(*args, **kwargs)
        except OfflineModeIsEnabled as error:
            raise DeploymentError(
                f"Cannot reach the hub at {self.endpoint} ({what}): HF_HUB_OFFLINE is set in "
                "the server's environment; unset it to deploy to a hub."
            ) from error
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise DeploymentError(
                f"The hub at {self.endpoint} refused to {what} (HTTP {status}): "
                f"{str(error).splitlines()[0]}"
                + ("; is HF_TOKEN set in the server's environment, with write access?"
                   if status in (401, 403) else "")
            ) from error
        except (ConnectionError, httpx.HTTPError, httpx2.HTTPError) as error:
            raise DeploymentError(
                f"The hub at {self.endpoint} is unreachable ({what}): {error}"
            ) from error

    def head(self) -> tuple[bool, str | None]:
        """(whether the repository exists, its revision's commit or None)."""
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            info = self._call(f"describe {self.repo_id}", self.api.model_info, self.repo_id,
                              revision=self.revision)
        except DeploymentError as error:
            cause = error.__cause__
            if isinstance(cause, RevisionNotFoundError):
                return True, None
            if isinstance(cause, RepositoryNotFoundError):
                return False, None
            raise
        return True, str(info.sha)

    def files(self, commit: str) -> dict[str, Any]:
        """The files at `commit`: path -> RepoFile (blob_id, size, lfs)."""
        from huggingface_hub.hf_api import RepoFile

        entries = self._call(f"list the files of {self.repo_id} at {commit[:12]}",
                             lambda: list(self.api.list_repo_tree(
                                 self.repo_id, revision=commit, recursive=True)))
        return {e.path: e for e in entries if isinstance(e, RepoFile)}

    def download(self, commit: str, path: str, into: Path) -> Path:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        url = hf_hub_url(self.repo_id, path, revision=commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token or False)
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)

        def fetch() -> None:
            from huggingface_hub.utils import hf_raise_for_status

            with get_session().stream("GET", url, headers=headers, follow_redirects=True) as r:
                hf_raise_for_status(r)
                with target.open("wb") as out:
                    for chunk in r.iter_bytes():
                        out.write(chunk)

        self._call(f"send {path} back", fetch)
        return target


def _expected_id(entry: Any) -> tuple[str, str]:
    """How a listed file's content is identified: (sha256 of an LFS file) or (git blob id)."""
    if entry.lfs is not None:
        return "sha256", str(entry.lfs.sha256)
    return "git", str(entry.blob_id)


def _local_id(path: Path, how: str) -> str:
    return sha256_of(path) if how == "sha256" else git_blob_id(path.read_bytes())


def _check_folder(folder: Path, artefacts: list[dict[str, Any]]) -> None:
    """The version's folder still holds the files the registry recorded, unchanged."""
    recorded = {a["path"]: a["sha256"] for a in artefacts}
    missing = sorted(p for p in recorded if not (folder / p).is_file())
    if missing:
        raise DeploymentError(
            f"The version's folder {folder} lacks files the registry recorded: {missing}"
        )
    for path, sha in recorded.items():
        if sha256_of(folder / path) != sha:
            raise DeploymentError(f"{path} in {folder} changed since the version was registered.")


def to_huggingface(
    store: Store, settings: Settings, job: Row, reporter: JobReporter, local_health_check: Any
) -> dict[str, Any]:
    """`local_health_check`: run.py's, which loads a model folder as the endpoints do."""
    from tuneforge.deploy.service import deployments_to

    spec = job["spec"]
    target = spec["target"]
    repo = HubRepo(spec["hub_endpoint"], target["repo_id"], target["revision"],
                   os.environ.get("HF_TOKEN") or None)
    existed, before = repo.head()  # also: reachable, before anything is written
    version = store.get_version(spec["name"], spec["version"])
    if version is None:
        raise DeploymentError(f"{spec['name']} v{spec['version']} is no longer registered.")
    folder = Path(resolve_model(store, settings, spec["model_id"]).location)
    artefacts = version["artefacts"]
    _check_folder(folder, artefacts)
    where = f"{repo.repo_id} on {repo.endpoint}"
    reporter.ensure_lease()
    if not existed:
        repo._call(f"create {repo.repo_id}", repo.api.create_repo, repo.repo_id,
                   private=target["private"], exist_ok=True)
        reporter.note(f"Created the {'private' if target['private'] else 'public'} "
                      f"repository {where}.")
        _, before_created = repo.head()
    else:
        before_created = before
    message = (f"{spec['name']} v{spec['version']} ({spec['model_id']}), "
               f"tuneforge deployment {job['id']}")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    # One commit: every file of the version, and whatever else the revision held removed
    # (except .gitattributes, which tells the hub which files are LFS).
    held = repo.files(before_created) if before_created else {}
    paths = {a["path"] for a in artefacts}
    operations: list[Any] = [CommitOperationDelete(p) for p in sorted(held)
                             if p not in paths and p != GITATTRIBUTES]
    operations += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
                   for p in sorted(paths)]
    info = repo._call(
        f"take the files of {spec['name']} v{spec['version']}", repo.api.create_commit,
        repo_id=repo.repo_id, operations=operations, revision=target["revision"],
        commit_message=message, parent_commit=before_created,
    )
    commit = str(info.oid)
    reporter.note(f"Committed {len(artefacts)} file(s) to {where} as {commit[:12]}.")
    health = _health_check(store, settings, spec, repo, commit, artefacts, local_health_check)
    reporter.note(
        f"Health check: {health['summary']}.",
        level="info" if health["passed"] else "error",
        data={"health_check": health},
    )
    if not health["passed"]:
        restored = _restore(store, settings, spec, repo, existed, before_created, commit,
                            folder, deployments_to, reporter, job["id"])
        raise DeploymentError(
            f"{spec['name']} v{spec['version']} on {where} failed its health check "
            f"({health['summary']})" + (f"; {restored}" if restored else ".")
        )
    return {"target": spec["target_key"], "endpoint": repo.endpoint, "repo_id": repo.repo_id,
            "revision": target["revision"], "commit": commit,
            "commit_url": getattr(info, "commit_url", None), "previous_commit": before,
            "created_repo": not existed, "files": len(artefacts), "health_check": health}


def _health_check(
    store: Store, settings: Settings, spec: dict[str, Any], repo: HubRepo, commit: str,
    artefacts: list[dict[str, Any]], local_health_check: Any,
) -> dict[str, Any]:
    """Every file at the new commit sent back and compared with the registry's SHA-256; then
    the model loaded from what came back and asked as the local target asks it."""
    recorded = {a["path"]: a["sha256"] for a in artefacts}
    listed = {p for p in repo.files(commit) if p != GITATTRIBUTES}
    missing, extra = sorted(set(recorded) - listed), sorted(listed - set(recorded))
    mismatched: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tuneforge-hub-check-") as tmp:
        back = Path(tmp)
        for path in sorted(set(recorded) & listed):
            if sha256_of(repo.download(commit, path, back)) != recorded[path]:
                mismatched.append(path)
        health: dict[str, Any] = {"commit": commit, "files": len(recorded), "missing": missing,
                                  "extra": extra, "mismatched": mismatched}
        if missing or extra or mismatched:
            problems = [f"{len(v)} {k}" for k, v in
                        (("missing", missing), ("extra", extra), ("not as sent", mismatched)) if v]
            health.update(passed=False, summary=f"{len(recorded)} files, {', '.join(problems)}")
            return health
        loaded = local_health_check(store, settings, spec, back)
    health.update(passed=bool(loaded["passed"]), model=loaded,
                  summary=f"{len(recorded)} files sent back with their SHA-256; loaded from "
                  f"the hub's copy: {loaded['summary']}")
    return health


def _restore(
    store: Store, settings: Settings, spec: dict[str, Any], repo: HubRepo, existed: bool,
    before: str | None, commit: str, folder: Path, deployments_to: Any, reporter: JobReporter,
    job_id: str,
) -> str:
    """Put back what the repository held before this deployment; returns what was done."""
    if not spec["rollback_on_failure"]:
        reporter.note(f"Left {commit[:12]} on {repo.repo_id}: rollback_on_failure is off.",
                      level="warn")
        return ""
    if not existed:
        repo._call(f"delete {repo.repo_id}", repo.api.delete_repo, repo.repo_id)
        reporter.note(f"Rolled back: deleted {repo.repo_id}, which this deployment created.")
        return f"the repository {repo.repo_id}, created by this deployment, is deleted."
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    now = repo.files(commit)
    then = repo.files(before) if before else {}
    # Local copies to put back: the files of this version and of the versions deployed to
    # this target before; anything else is downloaded from the earlier commit and checked.
    sources = [folder]
    for row in deployments_to(store, spec["target_key"]):
        if row["status"] == "succeeded":
            found = store.get_version(row["spec"]["name"], row["spec"]["version"])
            if found is not None:
                sources.append(Path(resolve_model(store, settings, found["model_id"]).location))
    operations: list[Any] = [CommitOperationDelete(p) for p in sorted(set(now) - set(then))]
    with tempfile.TemporaryDirectory(prefix="tuneforge-hub-restore-") as tmp:
        for path, entry in sorted(then.items()):
            if path in now and _expected_id(now[path]) == _expected_id(entry):
                continue
            how, wanted = _expected_id(entry)
            local = next((s / path for s in sources if (s / path).is_file()
                          and _local_id(s / path, how) == wanted), None)
            if local is None:
                local = repo.download(before or "", path, Path(tmp))
                if _local_id(local, how) != wanted:
                    raise DeploymentError(
                        f"{repo.repo_id} failed its health check and could not be restored: "
                        f"{path} as of {before} came back altered from {repo.endpoint}; "
                        f"{commit[:12]} is left in place."
                    )
            operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)))
        info = repo._call(
            f"restore {repo.repo_id}", repo.api.create_commit, repo_id=repo.repo_id,
            operations=operations, revision=repo.revision, parent_commit=commit,
            commit_message=f"Restore {str(before)[:12]}: tuneforge deployment {job_id} failed "
            "its health check",
        )
    restored = repo.files(str(info.oid))
    if {p: _expected_id(e) for p, e in restored.items()} != \
            {p: _expected_id(e) for p, e in then.items()}:
        raise DeploymentError(f"{repo.repo_id} could not be restored to {before}: the files at "
                              f"{str(info.oid)[:12]} differ from those.")
    reporter.note(f"Rolled back: {repo.repo_id} holds the files of {str(before)[:12]} again "
                  f"(commit {str(info.oid)[:12]}).")
    return f"the files of {str(before)[:12]} are restored (commit {str(info.oid)[:12]})."
