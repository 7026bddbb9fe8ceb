# Copyright 2026 openstack-image-helper authors.
# Licensed under the Apache License, Version 2.0.

"""A fake `OpenstackManager` for a charm's unit tests: no daemon, no OpenStack.

`FakeOpenstackManager` has the public surface of
`charms.openstack_image_helper.v0.openstack_manager.OpenstackManager` and keeps
everything in memory, in a `FakeDaemon` that every fake manager shares (as the
managers of a charm's hooks share the one daemon of the machine). It is
deterministic: image ids are `fake-image-0001`, `fake-image-0002`, ..., each image
one second newer than the one before, and a job ends the first time it is read
again. Errors are raised as the real library raises them (same classes, codes and
kinds), and a test injects them with `FakeDaemon.fail`.

Example usage (ops' Scenario; the charm imports `OpenstackManager` by name):

```python
import pytest
from ops import testing
from charms.openstack_image_helper.v0.openstack_manager import CODE_TOO_MANY_UPLOADS
from charms.openstack_image_helper.v0.testing import FakeDaemon, FakeOpenstackManager

import charm


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(charm, "OpenstackManager", FakeOpenstackManager)
    return FakeOpenstackManager.reset()


def test_upload_action(fake: FakeDaemon, tmp_path):
    (tmp_path / "image.img").write_bytes(b"an image")
    ctx = testing.Context(charm.MyCharm)
    ctx.run(ctx.on.action("upload", params={"path": str(tmp_path / "image.img")}), state)
    assert ctx.action_results["id"] == "fake-image-0001"
    fake.fail("upload", CODE_TOO_MANY_UPLOADS, retry_after=30)  # the next upload
```
"""

import dataclasses
import datetime
import hashlib
import os
import re
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from charms.openstack_image_helper.v0 import openstack_manager as om

# The unique identifier of this library: never changes.
LIBID = "0b0c3f5a7d3f4d6c9a1e2b7c8d9e0f12"

# The major version: bumped on changes that break a charm using the library.
LIBAPI = 0

# The minor version: bumped on every change published within LIBAPI.
LIBPATCH = 1

__all__ = ["FakeDaemon", "FakeImage", "FakeOpenstackManager"]

_E = TypeVar("_E", bound=om.OpenstackImageHelperError)
_APP_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$")
_BASES = {"focal": "focal", "jammy": "jammy", "noble": "noble", "resolute": "resolute"}
_BASES.update({"20.04": "focal", "22.04": "jammy", "24.04": "noble", "26.04": "resolute"})
_ARCHES = ("x64", "arm64", "s390x", "ppc64le")
_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
# The calls `FakeDaemon.fail` can make fail.
_CALLS = ("clouds", "latest", "upload", "job", "status")


@dataclasses.dataclass
class FakeImage:
    """One image of the fake Glance.

    Attributes:
        id: its id (`fake-image-0001`).
        name: its name (`jammy-my-app-x64`).
        cloud: the cloud it is in.
        size: its size in bytes (the file's).
        checksum: the file's md5.
        created_at: when it was made (RFC 3339; one second after the image before it).
    """

    id: str
    name: str
    cloud: str
    size: int
    checksum: str
    created_at: str


class FakeDaemon:
    """The in-memory state every `FakeOpenstackManager` shares: clouds, images, jobs.

    Attributes:
        clouds: the clouds.yaml document in force (`{"clouds": {...}}`), or None.
        images: every image, oldest first.
        jobs: every job, as the daemon would answer `GET /v1/jobs/{id}`.
        version: what `GET /v1/health` answers as `version` (None: a 0.2 daemon).
        upload_dirs: when set, a file outside them is `path_not_allowed`.
        calls: each call the charm made, in order (`("upload", {the request})`, ...).
    """

    def __init__(self) -> None:
        """Start empty: no clouds, no images, no jobs, a 0.3.0 daemon."""
        self.clouds: Optional[Dict[str, Any]] = None
        self.images: List[FakeImage] = []
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.version: Optional[str] = "0.3.0"
        self.upload_dirs: Optional[List[str]] = None
        self.calls: List[Tuple[str, Dict[str, Any]]] = []
        self._failures: List[Tuple[str, str, str, Optional[float]]] = []
        self._counters: Dict[str, int] = {}

    def fail(
        self,
        call: str,
        code: str,
        message: str = "",
        *,
        retry_after: Optional[float] = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of a kind fail with `code`, as the daemon would.

        Args:
            call: `clouds` (building a manager), `latest`, `upload` (every upload
                method), `job` (`get_job`, `Job.refresh`, `Job.wait`) or `status`.
            code: the error's code (`CODE_TOO_MANY_UPLOADS`, `CODE_DAEMON_UNREACHABLE`,
                ...): it decides the error's class, as in the real library.
            message: the error's message (default: one naming the code).
            retry_after: the error's `retry_after`.
            times: how many calls fail.

        Raises:
            ValueError: for an unknown `call`.
        """
        if call not in _CALLS:
            raise ValueError(f"unknown call {call!r}: one of {_CALLS}")
        for _ in range(times):
            self._failures.append((call, code, message or f"injected {code}", retry_after))

    def add_image(self, cloud: str, name: str, size: int = 0, checksum: str = "") -> FakeImage:
        """Put an image in the fake Glance, newer than every other (a unit's upload).

        Args:
            cloud: the cloud.
            name: its name (`jammy-my-app-x64`).
            size: its size.
            checksum: its md5.

        Returns:
            The image.
        """
        image = FakeImage(self._next("image"), name, cloud, size, checksum, self._now())
        self.images.append(image)
        return image

    def images_named(self, cloud: str, name: str) -> List[FakeImage]:
        """The images of that name in that cloud, oldest first.

        Args:
            cloud: the cloud.
            name: the image name.

        Returns:
            The images.
        """
        return [i for i in self.images if (i.cloud, i.name) == (cloud, name)]

    def _next(self, kind: str) -> str:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return f"fake-{kind}-{self._counters[kind]:04d}"

    def _now(self) -> str:
        moment = _EPOCH + datetime.timedelta(seconds=self._counters.get("image", 0))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _check(self, call: str, error: Type[_E], **extra: Any) -> None:
        """Raise the first injected failure of `call`, if any."""
        for n, (kind, code, message, retry_after) in enumerate(self._failures):
            if kind == call:
                del self._failures[n]
                status = None if code in (om.CODE_DAEMON_UNREACHABLE, om.CODE_TIMEOUT) else 500
                raise om._error(
                    error, message, code=code, status=status, retry_after=retry_after, **extra
                )


class FakeOpenstackManager:
    """`OpenstackManager`, in memory (see the module's docstring).

    Attributes:
        daemon: the `FakeDaemon` every fake manager uses; `reset()` makes a new one.
        clouds: the clouds taken from `cloud_config`.
        default_cloud: the first cloud of `cloud_config`.
    """

    daemon: ClassVar[FakeDaemon] = FakeDaemon()

    def __init__(
        self,
        cloud_config: Optional[Mapping[str, Any]],
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        request_timeout: float = 120.0,
    ) -> None:
        """Take the clouds, as `OpenstackManager` does (the keyword arguments are ignored).

        Args:
            cloud_config: the parsed clouds.yaml, or None for the clouds in force.
            url: ignored.
            token: ignored.
            token_file: ignored.
            request_timeout: ignored.

        Raises:
            UnauthorizedError: for a document without clouds, or an injected failure.
        """
        del url, token, token_file, request_timeout
        self.clouds: List[str] = []
        self.default_cloud: Optional[str] = None
        if cloud_config is not None:
            self._put(dict(cloud_config))

    @classmethod
    def reset(cls) -> FakeDaemon:
        """Start again from an empty daemon (call it in a fixture).

        Returns:
            The new daemon.
        """
        cls.daemon = FakeDaemon()
        return cls.daemon

    @classmethod
    def from_secret_content(
        cls, content: Mapping[str, str], *, key: str = om.SECRET_CLOUDS_KEY, **kwargs: Any
    ) -> "FakeOpenstackManager":
        """As `OpenstackManager.from_secret_content`: the clouds.yaml under `key`.

        Args:
            content: the secret's content.
            key: its key holding clouds.yaml.
            **kwargs: ignored, as `OpenstackManager`'s.

        Returns:
            The manager.

        Raises:
            UnauthorizedError: when `key` is missing (`invalid_clouds_yaml`).
        """
        text = content.get(key)
        if not isinstance(text, str) or not text.strip():
            raise om._error(
                om.UnauthorizedError,
                f"the secret's content has no {key!r} (keys: {sorted(content)})",
                code=om.CODE_INVALID_CLOUDS_YAML,
            )
        manager = cls(None, **kwargs)
        manager._put({"clouds": {name: {} for name in om._yaml_cloud_names(text)}})
        return manager

    def __enter__(self) -> "FakeOpenstackManager":
        """As `OpenstackManager`.

        Returns:
            The manager.
        """
        return self

    def __exit__(self, *_args: object) -> None:
        """As `OpenstackManager`."""

    def _put(self, document: Dict[str, Any]) -> None:
        self.daemon.calls.append(("clouds", document))
        self.daemon._check("clouds", om.UnauthorizedError)
        clouds = document.get("clouds")
        if not isinstance(clouds, Mapping) or not clouds:
            raise om._error(
                om.UnauthorizedError,
                "the daemon refused the clouds: invalid_clouds_yaml: no clouds",
                code=om.CODE_INVALID_CLOUDS_YAML,
                status=422,
            )
        self.daemon.clouds = document
        self.clouds = [str(name) for name in clouds]
        self.default_cloud = self.clouds[0]

    def _cloud(self, cloud: Optional[str], error: Type[_E]) -> str:
        clouds = list((self.daemon.clouds or {}).get("clouds") or {})
        name = cloud or self.default_cloud or (clouds[0] if clouds else None)
        if name is None or name not in clouds:
            raise om._error(
                error, f"unknown_cloud: no cloud {name!r}", code=om.CODE_UNKNOWN_CLOUD, status=404
            )
        return name

    def daemon_version(self) -> Optional[str]:
        """As `OpenstackManager.daemon_version`: `FakeDaemon.version`.

        Returns:
            The version, or None.
        """
        return self.daemon.version

    def require_daemon(self, minimum: str, feature: str) -> None:
        """As `OpenstackManager.require_daemon`.

        Args:
            minimum: the version the feature needs.
            feature: what needs it.

        Raises:
            DaemonTooOldError: when `FakeDaemon.version` is older.
        """
        version = self.daemon.version
        if version is None or om._version_tuple(version) < om._version_tuple(minimum):
            exc = om._error(
                om.DaemonTooOldError,
                f"{feature} needs openstack-image-helper {minimum} or newer, and the daemon "
                f"is {version or 'older than 0.3'}",
                code=om.CODE_DAEMON_TOO_OLD,
            )
            exc.version, exc.required = version, minimum
            raise exc

    def status(self) -> om.DaemonStatus:
        """As `OpenstackManager.status`: every cloud authenticated.

        Returns:
            The status.
        """
        self.daemon._check("status", om.OpenstackImageHelperError)
        clouds = list((self.daemon.clouds or {}).get("clouds") or {})
        states = [str(job["state"]) for job in self.daemon.jobs.values()]
        return om.DaemonStatus(
            clouds=[om.CloudStatus(name, True, None, None, None, "direct") for name in clouds],
            uploads_in_flight=sum(s in ("uploading", "verifying", "pruning") for s in states),
            default_cloud=clouds[0] if clouds else None,
            version=self.daemon.version,
            jobs={s: states.count(s) for s in ("queued", "uploading", "succeeded", "failed")},
            raw={},
        )

    def get_latest_image_id(
        self, image_base: Any, app_name: str, arch: Any, *, cloud: Optional[str] = None
    ) -> Optional[str]:
        """As `OpenstackManager.get_latest_image_id`.

        Args:
            image_base: the base.
            app_name: the application.
            arch: the architecture.
            cloud: the cloud (default: `default_cloud`).

        Returns:
            The newest image's id, or None.
        """
        latest = self.get_latest_image(image_base, app_name, arch, cloud=cloud)
        return None if latest is None else latest.id

    def get_latest_image(
        self, image_base: Any, app_name: str, arch: Any, *, cloud: Optional[str] = None
    ) -> Optional[om.LatestImage]:
        """As `OpenstackManager.get_latest_image`.

        Args:
            image_base: the base.
            app_name: the application.
            arch: the architecture.
            cloud: the cloud (default: `default_cloud`).

        Returns:
            The newest image, or None.
        """
        self.daemon.calls.append(("latest", {"base": om._value(image_base), "cloud": cloud}))
        self.daemon._check("latest", om.GetImageError)
        name = _name(image_base, app_name, arch, om.GetImageError)
        target = self._cloud(cloud, om.GetImageError)
        images = self.daemon.images_named(target, name)
        if not images:
            return None
        return om.LatestImage(images[-1].id, name, images[-1].created_at, target)

    def upload_image(self, config: om.UploadImageConfig, **kwargs: Any) -> str:
        """As `OpenstackManager.upload_image`.

        Args:
            config: the upload.
            **kwargs: `cloud`, `skip_unchanged`, `timeout`.

        Returns:
            The image id.
        """
        return self.upload(config, **kwargs).id

    def upload(
        self,
        config: om.UploadImageConfig,
        *,
        cloud: Optional[str] = None,
        skip_unchanged: bool = False,
        timeout: Optional[float] = None,
    ) -> om.UploadResult:
        """As `OpenstackManager.upload`: the image is there at once.

        Args:
            config: the upload.
            cloud: the cloud (default: `default_cloud`).
            skip_unchanged: return the newest image when it has the same bytes.
            timeout: ignored (the fake never waits).

        Returns:
            The result.
        """
        del timeout
        return self.start_upload(config, cloud=cloud, skip_unchanged=skip_unchanged).wait()

    def start_upload(
        self,
        config: om.UploadImageConfig,
        *,
        cloud: Optional[str] = None,
        skip_unchanged: bool = False,
    ) -> om.Job:
        """As `OpenstackManager.start_upload`: a `queued` job that ends when read again.

        Args:
            config: the upload.
            cloud: the cloud (default: `default_cloud`).
            skip_unchanged: as for `upload`.

        Returns:
            The job.
        """
        request = om.OpenstackManager._upload_body(config, skip_unchanged, cloud)
        self.daemon.calls.append(("upload", request))
        self.daemon._check("upload", om.UploadImageError)
        target = self._cloud(cloud, om.UploadImageError)
        request["cloud"] = target
        size, checksum = self._read(str(request["src_path"]))
        name = _name(config.base, config.app_name, config.arch, om.UploadImageError)
        if config.num_revisions < 1:
            raise om._error(
                om.UploadImageError,
                "invalid_request: num_revisions must be at least 1",
                code=om.CODE_INVALID_REQUEST,
                status=400,
            )
        job_id = self.daemon._next("job")
        job = {
            "job": job_id,
            "state": "queued",
            "bytes_sent": 0,
            "bytes_total": size,
            "image_id": None,
            "error": None,
            "request": request,
            "result": None,
        }
        job["_outcome"] = (target, name, size, checksum, config.num_revisions, skip_unchanged)
        self.daemon.jobs[job_id] = job
        return om.Job.from_answer(_public(job), self)

    def _read(self, path: str) -> Tuple[int, str]:
        allowed = self.daemon.upload_dirs
        if allowed is not None and not any(
            os.path.realpath(path).startswith(os.path.realpath(d) + os.sep) for d in allowed
        ):
            raise om._error(
                om.UploadImageError,
                f"path_not_allowed: {path} is outside {allowed}",
                code=om.CODE_PATH_NOT_ALLOWED,
                status=403,
            )
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise om._error(
                om.UploadImageError,
                f"file_not_found: {path}: {exc.strerror}",
                code=om.CODE_FILE_NOT_FOUND,
                status=400,
            ) from exc
        return len(data), _md5(data)

    def _finish(self, job_id: str) -> Dict[str, Any]:
        """End a queued job: the image made and the old revisions pruned."""
        job = self.daemon.jobs[job_id]
        if job["state"] != "queued":
            return job
        target, name, size, checksum, keep, skip = job["_outcome"]
        existing = self.daemon.images_named(target, name)
        if skip and existing and (existing[-1].size, existing[-1].checksum) == (size, checksum):
            image, pruned, unchanged = existing[-1], [], True
        else:
            image = self.daemon.add_image(target, name, size, checksum)
            old = existing[: max(len(existing) + 1 - keep, 0)]
            self.daemon.images = [i for i in self.daemon.images if i not in old]
            pruned, unchanged = [i.id for i in old], False
        job.update(state="succeeded", bytes_sent=size, image_id=image.id)
        job["result"] = {
            "id": image.id,
            "name": name,
            "status": "active",
            "size": size,
            "checksum": checksum,
            "pruned": pruned,
            "cloud": target,
            "unchanged": unchanged,
            "attempts": 1,
        }
        return job

    def upload_image_to_clouds(
        self, config: om.UploadImageConfig, clouds: Sequence[str], **kwargs: Any
    ) -> Dict[str, str]:
        """As `OpenstackManager.upload_image_to_clouds`, one cloud after the other.

        Args:
            config: the upload.
            clouds: the clouds (`["*"]`: every one).
            **kwargs: `skip_unchanged`, `timeout`.

        Returns:
            Each cloud's image id.
        """
        names = list(clouds)
        if names == ["*"]:
            names = list((self.daemon.clouds or {}).get("clouds") or {})
        return {name: self.upload_image(config, cloud=name, **kwargs) for name in names}

    def get_job(self, job_id: str) -> om.Job:
        """As `OpenstackManager.get_job`.

        Args:
            job_id: the job's id.

        Returns:
            The job.
        """
        return om.Job.from_answer(self._job_answer(job_id), self)

    def _job_answer(self, job_id: str) -> Dict[str, Any]:
        self.daemon._check("job", om.UploadImageError, job_id=job_id)
        if job_id not in self.daemon.jobs:
            raise om._error(
                om.UploadImageError,
                f"job {job_id}: not_found",
                code=om.CODE_NOT_FOUND,
                status=404,
                job_id=job_id,
            )
        return _public(self._finish(job_id))

    def _follow(self, job: Mapping[str, Any], deadline: Optional[float]) -> Dict[str, Any]:
        del deadline
        return self._job_answer(str(job["job"]))

    @staticmethod
    def _result(final: Mapping[str, Any], request: Mapping[str, Any]) -> om.UploadResult:
        return om.OpenstackManager._result(final, request)


def _md5(data: bytes) -> str:
    """The md5 Glance reports as `checksum` (a checksum, not a security measure)."""
    try:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    except TypeError:  # Python 3.8 has no usedforsecurity
        return hashlib.md5(data).hexdigest()  # noqa: S324 (a checksum)


def _public(job: Mapping[str, Any]) -> Dict[str, Any]:
    """A job as the daemon answers it (without the fake's own bookkeeping)."""
    return {k: v for k, v in job.items() if not k.startswith("_")}


def _name(base: Any, app_name: str, arch: Any, error: Type[_E]) -> str:
    """The image name, or `invalid_request` for a field the daemon refuses."""
    base_name = _BASES.get(om._value(base))
    if base_name is None or om._value(arch) not in _ARCHES or not _APP_NAME.match(app_name):
        raise om._error(
            error,
            f"invalid_request: base {om._value(base)!r}, app_name {app_name!r}, "
            f"arch {om._value(arch)!r}",
            code=om.CODE_INVALID_REQUEST,
            status=400,
        )
    return f"{base_name}-{app_name}-{om._value(arch)}"
