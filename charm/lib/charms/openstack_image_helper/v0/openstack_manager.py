# Copyright 2026 openstack-image-helper authors.
# Licensed under the Apache License, Version 2.0.

"""Keep a charm's OpenStack images through the openstack-image-helper daemon.

openstack-image-helper is a daemon on the charm's machine that holds a Keystone
session per cloud, uploads image files to Glance (streamed, hashes verified),
keeps the last N revisions of an image and answers "which is the latest". This
library is its client for charms. It offers the names of the `openstack_manager`
module that charms used to call openstacksdk with, with the same signatures and
exceptions, so switching is a one-line import change:

    from openstack_manager import OpenstackManager, UploadImageConfig  # before
    from charms.openstack_image_helper.v0.openstack_manager import (  # after
        OpenstackManager,
        UploadImageConfig,
    )

The daemon is found at `http://127.0.0.1:8427`, or `OPENSTACK_IMAGE_HELPER_URL`
(which may be `unix:/path/to/api.sock`), and its bearer token is read from
`/var/lib/openstack-image-helper/api-token`, or `OPENSTACK_IMAGE_HELPER_TOKEN_FILE`.
The keyword arguments `url=`, `token=` and `token_file=` of `OpenstackManager`
override both.

An upload runs as a job in the daemon: it goes on when the hook dies, and the
same call in the next hook run (same request, same file) follows that job
instead of uploading the file a second time.

Example usage (in a charm's hook; `BaseImage` and `Arch` are the charm's enums, and
each call raises the old module's exceptions: `UnauthorizedError` for bad
credentials, `GetImageError`, `UploadImageError`):

```python
import yaml
from charms.openstack_image_helper.v0.openstack_manager import (
    OpenstackManager,
    UploadImageConfig,
)

manager = OpenstackManager(yaml.safe_load(self.config["openstack-clouds-yaml"]))
image_id = manager.get_latest_image_id(BaseImage.JAMMY, self.app.name, Arch.X64)
if image_id is None:
    image_id = manager.upload_image(
        UploadImageConfig(
            arch=Arch.X64,
            app_name=self.app.name,
            base=BaseImage.JAMMY,
            num_revisions=3,
            src_path="/var/lib/openstack-image-helper/images/jammy-x64.img",
        )
    )
```
"""

import array
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.parse
from typing import (
    Any,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    cast,
)

# The unique identifier of this library: never changes.
LIBID = "5e7f90be85364369887fc42388b6b10b"

# The major version: bumped on changes that break a charm using the library.
LIBAPI = 0

# The minor version: bumped on every change published within LIBAPI.
LIBPATCH = 3

__all__ = [
    "CODE_CONFLICT",
    "CODE_DAEMON_TOO_OLD",
    "CODE_DAEMON_UNREACHABLE",
    "CODE_FILE_NOT_FOUND",
    "CODE_GET_IMAGE_FAILED",
    "CODE_IMAGE_TOO_LARGE",
    "CODE_INSUFFICIENT_SPACE",
    "CODE_INTERNAL_ERROR",
    "CODE_INTERRUPTED",
    "CODE_INVALID_CLOUDS_YAML",
    "CODE_INVALID_REQUEST",
    "CODE_IN_USE",
    "CODE_METHOD_NOT_ALLOWED",
    "CODE_NOT_FOUND",
    "CODE_NOT_READY",
    "CODE_OPENSTACK_CONNECTION_FAILED",
    "CODE_OPENSTACK_UNAUTHORIZED",
    "CODE_PATH_NOT_ALLOWED",
    "CODE_REQUEST_TOO_LARGE",
    "CODE_SHUTTING_DOWN",
    "CODE_TIMEOUT",
    "CODE_TOO_MANY_UPLOADS",
    "CODE_UNAUTHORIZED",
    "CODE_UNKNOWN_CLOUD",
    "CODE_UNSAFE_IMAGE",
    "CODE_UPLOAD_IMAGE_FAILED",
    "DEFAULT_TOKEN_FILE",
    "DEFAULT_URL",
    "IMAGE_NAME_TMPL",
    "SECRET_CLOUDS_KEY",
    "TOKEN_FILE_ENV",
    "URL_ENV",
    "ApiTokenError",
    "CloudStatus",
    "CredentialsError",
    "DaemonStatus",
    "DaemonTooOldError",
    "DaemonUnreachableError",
    "GetImageError",
    "Job",
    "LatestImage",
    "OpenstackConnectionError",
    "OpenstackImageHelperError",
    "OpenstackManager",
    "PermanentError",
    "PruneFailure",
    "TransientError",
    "UnauthorizedError",
    "UploadImageConfig",
    "UploadImageError",
    "UploadResult",
]

logger = logging.getLogger(__name__)

# The image name, as the old module spelled it; the daemon's default
# `image_name_template` ("{base}-{app_name}-{arch}") gives the same names.
IMAGE_NAME_TMPL = "{IMAGE_BASE}-{APP_NAME}-{ARCH}"

# Where the daemon listens unless the environment or `url=` says otherwise.
DEFAULT_URL = "http://127.0.0.1:8427"
# Where the daemon's API token is read unless the environment or `token_file=` says otherwise.
DEFAULT_TOKEN_FILE = "/var/lib/openstack-image-helper/api-token"  # noqa: S105 (a path)
# The environment variable naming the daemon's address (`http://host:port` or `unix:/path`).
URL_ENV = "OPENSTACK_IMAGE_HELPER_URL"
# The environment variable naming the API token file.
TOKEN_FILE_ENV = "OPENSTACK_IMAGE_HELPER_TOKEN_FILE"  # noqa: S105 (a name)
# The key of a Juju secret's content that holds clouds.yaml (`from_secret_content`).
SECRET_CLOUDS_KEY = "clouds-yaml"  # noqa: S105 (a name)

# The daemon's error codes (the `code` of every error), and the library's own.
CODE_INVALID_REQUEST = "invalid_request"
CODE_FILE_NOT_FOUND = "file_not_found"
CODE_UNAUTHORIZED = "unauthorized"  # the daemon refused the API token
CODE_PATH_NOT_ALLOWED = "path_not_allowed"
CODE_UNKNOWN_CLOUD = "unknown_cloud"
CODE_IMAGE_TOO_LARGE = "image_too_large"
CODE_REQUEST_TOO_LARGE = "request_too_large"
CODE_OPENSTACK_UNAUTHORIZED = "openstack_unauthorized"  # Keystone refused the credentials
CODE_INVALID_CLOUDS_YAML = "invalid_clouds_yaml"
CODE_GET_IMAGE_FAILED = "get_image_failed"
CODE_UPLOAD_IMAGE_FAILED = "upload_image_failed"
CODE_OPENSTACK_CONNECTION_FAILED = "openstack_connection_failed"
CODE_NOT_READY = "not_ready"
CODE_NOT_FOUND = "not_found"
CODE_METHOD_NOT_ALLOWED = "method_not_allowed"
CODE_CONFLICT = "conflict"
CODE_SHUTTING_DOWN = "shutting_down"
CODE_INTERNAL_ERROR = "internal_error"
CODE_INTERRUPTED = "interrupted"  # a job cut off by a stop or a crash
CODE_UNSAFE_IMAGE = "unsafe_image"  # 0.3
CODE_TOO_MANY_UPLOADS = "too_many_uploads"  # 0.3, with Retry-After
CODE_INSUFFICIENT_SPACE = "insufficient_space"  # 0.3
CODE_IN_USE = "in_use"  # 0.3, an old revision Glance would not delete (`prune_failed`)
# The library's own: the timeout of a call ran out (the job goes on in the daemon).
CODE_TIMEOUT = "timeout"
# The library's own: the daemon could not be reached.
CODE_DAEMON_UNREACHABLE = "daemon_unreachable"
# The library's own: the daemon is older than a feature needs.
CODE_DAEMON_TOO_OLD = "daemon_too_old"

_USER_AGENT = f"openstack-image-helper-charmlib/{LIBAPI}.{LIBPATCH}"
_FINAL_STATES = ("succeeded", "failed")
# How long following a job tolerates an unreachable daemon (a restart).
_RECONNECT_WINDOW = 30.0
# Polling of a job: the first wait, and the longest.
_POLL_FIRST = 0.2
_POLL_MAX = 2.0
# However short an upload's timeout, how long its POST may take to be answered.
_POST_GRACE = 10.0
# A socket timeout that is no limit in practice (a day).
_NO_LIMIT = 86400.0
# How many failed jobs of earlier hook runs an upload steps over before giving up.
_MAX_ATTEMPTS = 1000


class _HasValue(Protocol):
    """An enum member, or anything else with a `.value` (the charm's `BaseImage`, `Arch`)."""

    @property
    def value(self) -> Any:
        """The value sent to the daemon (`"jammy"`, `"x64"`)."""


# A base or an architecture: an enum member or its string value.
_Named = Union[str, _HasValue]
_PathLike = Union[str, "os.PathLike[str]"]


class OpenstackImageHelperError(Exception):
    """Base of this library's errors.

    Attributes:
        message: what went wrong, in words.
        code: the daemon's error code (such as `"path_not_allowed"`), or None when
            the daemon gave none (it could not be reached, for one).
        status: the HTTP status of the daemon's answer, or None.
        retry_after: seconds to wait before trying again, when the daemon said
            (`Retry-After`), else None.
    """

    retry_after: Optional[float] = None

    def __init__(
        self, message: str = "", *, code: Optional[str] = None, status: Optional[int] = None
    ) -> None:
        """Build the error.

        Args:
            message: what went wrong, in words.
            code: the daemon's error code, if it gave one.
            status: the HTTP status of the daemon's answer, if any.
        """
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class UnauthorizedError(OpenstackImageHelperError):
    """Represents an unauthorized connection to Openstack (or clouds the daemon refused)."""


class GetImageError(OpenstackImageHelperError):
    """Represents an error when fetching images from Openstack."""


class UploadImageError(OpenstackImageHelperError):
    """Represents an error when uploading image to Openstack.

    Attributes:
        job_id: the daemon's job of the upload, when there was one (`get_job` reads it).
        results: for an upload to several clouds, each cloud's new image id, or None
            where that cloud failed.
    """

    def __init__(
        self,
        message: str = "",
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        job_id: Optional[str] = None,
        results: Optional[Dict[str, Optional[str]]] = None,
    ) -> None:
        """Build the error.

        Args:
            message: what went wrong, in words.
            code: the daemon's error code, if it gave one.
            status: the HTTP status of the daemon's answer, if any.
            job_id: the upload's job, if there was one.
            results: per cloud, the new image id or None, for several clouds.
        """
        super().__init__(message, code=code, status=status)
        self.job_id = job_id
        self.results: Dict[str, Optional[str]] = dict(results or {})


class OpenstackConnectionError(OpenstackImageHelperError):
    """Represents an error while communicating with Openstack (or with the daemon)."""


class TransientError(OpenstackImageHelperError):
    """Retry later: the daemon is stopping, not ready, full, or unreachable.

    Raised as a class that is also the call's own error (`UploadImageError` for
    an upload, `GetImageError` for `get_latest_image_id`, ...): catch either.

    `retry_after` holds the seconds the daemon asked the caller to wait (the
    `Retry-After` of a `429 too_many_uploads`), or None when it did not say.
    """


class DaemonUnreachableError(TransientError, OpenstackConnectionError):
    """The daemon could not be reached, or gave no answer (`code` "daemon_unreachable")."""


class PermanentError(OpenstackImageHelperError):
    """The same call would fail again: fix the request, the file or the credentials.

    Raised as a class that is also the call's own error, like `TransientError`.
    """


class ApiTokenError(PermanentError):
    """The daemon refused this library's API token (`401 unauthorized`).

    The token file is the daemon's, not OpenStack's: read the right file (as root, or
    `token_file=`), or restart the daemon to have it written. OpenStack's refusal is
    `CredentialsError`.
    """


class CredentialsError(PermanentError):
    """OpenStack refused a cloud's credentials (`422 openstack_unauthorized`)."""


class DaemonTooOldError(PermanentError):
    """The daemon is older than a feature of this library needs (`code` "daemon_too_old").

    Attributes:
        version: the daemon's version, or None when it is older than 0.3 (its
            `/v1/health` does not say).
        required: the version the feature needs.
    """

    version: Optional[str] = None
    required: str = ""


# The kind of error each code is; every other code is a `PermanentError`.
_KINDS: Dict[str, Type[OpenstackImageHelperError]] = {
    CODE_SHUTTING_DOWN: TransientError,
    CODE_NOT_READY: TransientError,
    CODE_TOO_MANY_UPLOADS: TransientError,
    CODE_INTERRUPTED: TransientError,
    CODE_OPENSTACK_CONNECTION_FAILED: TransientError,
    CODE_TIMEOUT: TransientError,
    CODE_DAEMON_UNREACHABLE: DaemonUnreachableError,
    CODE_UNAUTHORIZED: ApiTokenError,
    CODE_OPENSTACK_UNAUTHORIZED: CredentialsError,
    CODE_DAEMON_TOO_OLD: DaemonTooOldError,
}
_COMBINED: Dict[Tuple[type, type], type] = {}
_E = TypeVar("_E", bound=OpenstackImageHelperError)


def _error_class(call: Type[_E], code: Optional[str]) -> Type[_E]:
    """The class raised for `code` by a call whose old error type is `call`.

    It is both `call` and the code's kind (`TransientError`, `CredentialsError`, ...),
    so the old `except` clauses and the new ones catch it alike.
    """
    kind = _KINDS.get(code or "", PermanentError)
    if issubclass(call, kind):
        return call
    if issubclass(kind, call):
        return kind
    combined = _COMBINED.get((call, kind))
    if combined is None:
        name = f"{call.__name__}_{kind.__name__}"
        combined = type(name, (call, kind), {"__module__": __name__, "__doc__": kind.__doc__})
        _COMBINED[(call, kind)] = combined
    return cast(Type[_E], combined)


def _error(
    call: Type[_E],
    message: str,
    *,
    code: Optional[str],
    status: Optional[int] = None,
    retry_after: Optional[float] = None,
    **extra: Any,
) -> _E:
    """An error of `call`'s type and `code`'s kind (see `_error_class`)."""
    exc = _error_class(call, code)(message, code=code, status=status, **extra)
    exc.retry_after = retry_after
    return exc


class _UnreachableError(Exception):
    """The daemon could not be reached, or gave no HTTP answer."""


class _NoAnswerInTimeError(_UnreachableError):
    """The daemon took the request but did not answer within the socket timeout."""


@dataclasses.dataclass
class UploadImageConfig:
    """Configuration values for creating image.

    Attributes:
        arch: The architecture the image was built for (`Arch` member or `"x64"`, ...).
        app_name: The charm application name, part of the image name.
        base: The ubuntu OS base the image was created with (`BaseImage` member or `"jammy"`).
        num_revisions: The number of revisions to keep for an image, the new one included.
        src_path: The path to image to upload (inside the daemon's `upload_dirs`).
    """

    arch: _Named
    app_name: str
    base: _Named
    num_revisions: int
    src_path: _PathLike


@dataclasses.dataclass(frozen=True)
class PruneFailure:
    """An old revision the prune could not delete (the upload itself succeeded).

    Attributes:
        id: the old image's id.
        code: why (`in_use` for a 409 from Glance: kept, tried again at the next prune).
        message: the daemon's words.
    """

    id: str
    code: Optional[str]
    message: str


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """An upload that succeeded: the image, active and verified, in one cloud.

    Attributes:
        id: the image's id.
        name: the image's name (`jammy-my-app-x64`).
        cloud: the cloud it is in.
        size: its size in bytes, as Glance verified it.
        checksum: its md5, as Glance reports it.
        pruned: the old revisions deleted.
        unchanged: True when `skip_unchanged` found this image already holding the
            file's bytes (nothing was uploaded or pruned).
        attempts: how many tries the upload took (1 from a daemon older than 0.3).
        stores: the Glance stores the image is in, None where the cloud has none.
        prune_failed: the old revisions whose deletion failed.
        prune_incomplete: True when a stop cut the prune short (the next upload of
            the name prunes the rest).
        format: the file's detected disk format (0.3), else None.
        disk_format: the disk format Glance holds (0.3), else None.
        raw: the daemon's answer as it is.
    """

    id: str
    name: str
    cloud: Optional[str]
    size: int
    checksum: str
    pruned: List[str]
    unchanged: bool = False
    attempts: int = 1
    stores: Optional[List[str]] = None
    prune_failed: List[PruneFailure] = dataclasses.field(default_factory=list)
    prune_incomplete: bool = False
    format: Optional[str] = None
    disk_format: Optional[str] = None
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], cloud: Optional[str] = None) -> "UploadResult":
        """Read the daemon's `201` answer (or a job's `result`).

        Args:
            answer: the answer's JSON.
            cloud: the cloud asked for, when the answer does not name it.

        Returns:
            The result; fields a daemon older than 0.3 lacks take their defaults.
        """
        stores = answer.get("stores")
        return cls(
            id=str(answer["id"]),
            name=str(answer.get("name", "")),
            cloud=answer.get("cloud", cloud),
            size=int(answer.get("size") or 0),
            checksum=str(answer.get("checksum", "")),
            pruned=[str(i) for i in answer.get("pruned") or []],
            unchanged=bool(answer.get("unchanged", False)),
            attempts=int(answer.get("attempts") or 1),
            stores=None if stores is None else [str(store) for store in stores],
            prune_failed=[
                PruneFailure(str(f.get("id", "")), f.get("code"), str(f.get("message", "")))
                for f in answer.get("prune_failed") or []
                if isinstance(f, Mapping)
            ],
            prune_incomplete=bool(answer.get("prune_incomplete", False)),
            format=answer.get("format"),
            disk_format=answer.get("disk_format"),
            raw=dict(answer),
        )


@dataclasses.dataclass(frozen=True)
class LatestImage:
    """The newest active image of a name (`GET /v1/images/latest`).

    Attributes:
        id: its id.
        name: its name (`jammy-my-app-x64`).
        created_at: when Glance created it (RFC 3339), as `image_info.ImageEntry` wants.
        cloud: the cloud asked (None: the daemon's default).
    """

    id: str
    name: str
    created_at: Optional[str]
    cloud: Optional[str]


class _JobSource(Protocol):
    """What a `Job` reads itself again through (the manager, or the fake)."""

    def _job_answer(self, job_id: str) -> Dict[str, Any]: ...

    def _follow(self, job: Mapping[str, Any], deadline: Optional[float]) -> Dict[str, Any]: ...

    def _result(self, final: Mapping[str, Any], request: Mapping[str, Any]) -> "UploadResult": ...


@dataclasses.dataclass
class Job:
    """An upload job as the daemon reports it (`GET /v1/jobs/{id}`).

    A job from `start_upload` or `get_job` can be followed: `refresh()` reads it
    again, `wait()` follows it to its end.

    Attributes:
        id: the job's id.
        state: `queued`, `uploading`, `verifying`, `pruning`, `succeeded` or `failed`.
        bytes_sent: bytes of the file sent so far.
        bytes_total: the file's size, when known.
        image_id: the new image (or the unchanged one), once there is one.
        error_code: the daemon's error code when the job failed (`interrupted`, ...).
        error_message: the daemon's message when the job failed.
        clouds: for a job of several clouds, each cloud's `state`, `bytes_sent`,
            `image_id` and `error`.
        raw: the daemon's answer as it is, every field included.
    """

    id: str
    state: str
    bytes_sent: int
    bytes_total: Optional[int]
    image_id: Optional[str]
    error_code: Optional[str]
    error_message: Optional[str]
    clouds: Dict[str, Dict[str, Any]]
    raw: Dict[str, Any]
    # The manager that reads the job again (None: a job read from an answer alone).
    _manager: Optional[_JobSource] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job has ended (`succeeded` or `failed`)."""
        return self.state in _FINAL_STATES

    @property
    def progress(self) -> Optional[float]:
        """The share of the file sent, from 0.0 to 1.0; None while the size is unknown."""
        if self.state == "succeeded":
            return 1.0
        if not self.bytes_total:
            return None
        return min(self.bytes_sent / self.bytes_total, 1.0)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any], manager: Optional[_JobSource] = None) -> "Job":
        """Read a job from the daemon's JSON answer.

        Args:
            answer: the body of `GET /v1/jobs/{id}` (or of the upload's `202`).
            manager: the manager that reads it again on `refresh()` and `wait()`.

        Returns:
            The job.
        """
        error = answer.get("error") or {}
        return cls(
            id=str(answer.get("job", "")),
            state=str(answer.get("state", "")),
            bytes_sent=int(answer.get("bytes_sent") or 0),
            bytes_total=answer.get("bytes_total"),
            image_id=answer.get("image_id"),
            error_code=error.get("code"),
            error_message=error.get("message"),
            clouds=dict(answer.get("clouds") or {}),
            raw=dict(answer),
            _manager=manager,
        )

    def _bound(self) -> _JobSource:
        if self._manager is None:
            raise OpenstackImageHelperError(
                f"job {self.id} was read without a manager: use OpenstackManager.get_job"
            )
        return self._manager

    def refresh(self) -> "Job":
        """Read the job again from the daemon (`GET /v1/jobs/{id}`), in place.

        Returns:
            The job itself, up to date.

        Raises:
            UploadImageError: As `OpenstackManager.get_job`.
        """
        if not self.done:
            fresh = Job.from_answer(self._bound()._job_answer(self.id), self._manager)
            for field in dataclasses.fields(self):
                setattr(self, field.name, getattr(fresh, field.name))
        return self

    def wait(self, timeout: Optional[float] = None) -> UploadResult:
        """Follow the job to its end.

        Args:
            timeout: Seconds to wait; None waits as long as it takes. When it runs out
                the job goes on in the daemon (`TransientError`, code "timeout").

        Returns:
            The upload's result.

        Raises:
            UploadImageError: If the job failed (`code` the daemon's), or the timeout ran
                out; each is also a `TransientError` or a `PermanentError`.
        """
        manager = self._bound()
        deadline = None if timeout is None else time.monotonic() + timeout
        final = manager._follow(self.raw, deadline)
        fresh = Job.from_answer(final, manager)
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(fresh, field.name))
        return manager._result(final, self.raw.get("request") or {})


@dataclasses.dataclass(frozen=True)
class CloudStatus:
    """One cloud of the daemon (`GET /v1/status`). Never a secret.

    Attributes:
        name: the cloud's name.
        authenticated: whether the daemon holds a valid Keystone token for it.
        token_expires_at: when that token expires (RFC 3339), or None.
        image_endpoint: the Glance endpoint in use, or None.
        last_error: the last error with that cloud, or None.
        upload_method: `direct` or `import` (0.3), else None.
    """

    name: str
    authenticated: bool
    token_expires_at: Optional[str]
    image_endpoint: Optional[str]
    last_error: Optional[str]
    upload_method: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DaemonStatus:
    """The daemon's state (`GET /v1/status`).

    Attributes:
        clouds: each configured cloud.
        uploads_in_flight: jobs holding an upload slot now.
        default_cloud: the cloud the daemon uses when a request names none.
        version: the daemon's version (`"0.3.0"`), None when it does not say.
        jobs: the jobs the daemon knows, by state.
        raw: the daemon's answer as it is.
    """

    clouds: List[CloudStatus]
    uploads_in_flight: int
    default_cloud: Optional[str]
    version: Optional[str]
    jobs: Dict[str, int]
    raw: Dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> "DaemonStatus":
        """Read the daemon's `GET /v1/status` answer.

        Args:
            answer: its JSON.

        Returns:
            The status.
        """
        clouds = [
            CloudStatus(
                name=str(c.get("name", "")),
                authenticated=bool(c.get("authenticated", False)),
                token_expires_at=c.get("token_expires_at"),
                image_endpoint=c.get("image_endpoint"),
                last_error=c.get("last_error"),
                upload_method=c.get("upload_method"),
            )
            for c in answer.get("clouds") or []
            if isinstance(c, Mapping)
        ]
        jobs = answer.get("jobs") or {}
        return cls(
            clouds=clouds,
            uploads_in_flight=int(answer.get("uploads_in_flight") or 0),
            default_cloud=answer.get("default_cloud"),
            version=answer.get("version"),
            jobs={str(k): int(v) for k, v in jobs.items()} if isinstance(jobs, Mapping) else {},
            raw=dict(answer),
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: `http.client` with the socket swapped.

    `fds` are handed to the daemon with the request's first bytes (`SCM_RIGHTS`):
    the daemon's `src_fd` wire form (its README, "Passing a file descriptor").
    """

    def __init__(self, path: str, timeout: Optional[float], fds: Sequence[int] = ()) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path
        self._fds = list(fds)

    def send(self, data: Any) -> None:
        if not self._fds or not isinstance(data, (bytes, bytearray)):
            super().send(data)
            return
        if self.sock is None:
            self.connect()
        fds, self._fds = self._fds, []
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = self.sock.sendmsg([data], rights)
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclasses.dataclass(frozen=True)
class _Answer:
    """One answer of the daemon."""

    status: int
    body: Dict[str, Any]
    # Seconds of the answer's `Retry-After`, when it has one.
    retry_after: Optional[float] = None

    def error(self) -> Dict[str, str]:
        """The daemon's `{"code", "message"}`, or a stand-in when the body has none."""
        err = self.body.get("error")
        if isinstance(err, dict):
            return {"code": str(err.get("code", "")), "message": str(err.get("message", ""))}
        return {"code": "", "message": f"HTTP {self.status}: {json.dumps(self.body)[:300]}"}


class _Daemon:
    """Where the daemon is, and how to ask it."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = url
        self._token = token
        self.timeout = timeout
        if url.startswith("unix:"):
            self._socket_path: Optional[str] = url[len("unix:") :]
            self._scheme, self._host, self._port, self._prefix = "unix", "", None, ""
            if not self._socket_path:
                raise OpenstackConnectionError(f"invalid daemon URL {url!r}: no socket path")
            return
        self._socket_path = None
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OpenstackConnectionError(
                f"invalid daemon URL {url!r}: expected http://host:port or unix:/path"
            )
        self._scheme, self._host = parts.scheme, parts.hostname
        try:
            self._port = parts.port
        except ValueError as exc:
            raise OpenstackConnectionError(f"invalid daemon URL {url!r}: {exc}") from exc
        self._prefix = parts.path.rstrip("/")

    @property
    def passes_descriptors(self) -> bool:
        """Whether a file can be handed over open (`src_fd`): over the unix socket."""
        return self._socket_path is not None

    def _connection(
        self, timeout: Optional[float], fds: Sequence[int] = ()
    ) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixHTTPConnection(self._socket_path, timeout, fds)
        if fds:
            raise _UnreachableError(f"{self.url}: a descriptor can only go over a unix socket")
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, str]] = None,
        body: Optional[Any] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        yaml_body: Optional[str] = None,
        fds: Sequence[int] = (),
    ) -> _Answer:
        """Send one request and read the JSON answer (`timeout`: None is the manager's).

        `fds` go with the request's first bytes (unix socket only).

        Raises:
            _UnreachableError: no HTTP answer (connection refused, timeout, reset).
        """
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        send_headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {self._token}",
            "Connection": "close",
            "User-Agent": _USER_AGENT,
        }
        send_headers.update(headers or {})
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body, default=str).encode()
            send_headers["Content-Type"] = "application/json"
        elif yaml_body is not None:
            data = yaml_body.encode()
            send_headers["Content-Type"] = "application/yaml"
        conn = self._connection(self.timeout if timeout is None else timeout, fds)
        logger.debug("%s %s (daemon %s)", method, target, self.url)
        try:
            conn.request(method, target, body=data, headers=send_headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
            retry_after = _seconds(response.getheader("Retry-After"))
        except socket.timeout as exc:
            raise _NoAnswerInTimeError(f"{self.url}: no answer in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _UnreachableError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"error": {"code": "", "message": raw[:300].decode(errors="replace")}}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        logger.debug("%s %s: HTTP %d", method, target, status)
        return _Answer(status, parsed, retry_after)


def _seconds(header: Optional[str]) -> Optional[float]:
    """A `Retry-After` in seconds (the daemon sends seconds), or None."""
    try:
        return None if header is None else max(float(header), 0.0)
    except ValueError:
        return None


def _value(named: _Named) -> str:
    """An enum member's value, or the string itself."""
    return str(getattr(named, "value", named))


def _read_token(token_file: str) -> str:
    try:
        with open(token_file, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as exc:
        raise OpenstackConnectionError(
            f"cannot read the daemon's API token from {token_file}: {exc.strerror or exc}"
        ) from exc
    if not token:
        raise OpenstackConnectionError(f"the daemon's API token file {token_file} is empty")
    return token


def _idempotency_key(body: Mapping[str, Any], attempt: int) -> Optional[str]:
    """The key of an upload: the request and the file's identity (path, size, mtime, inode).

    The same call in a re-run hook gets the same key, so the daemon answers with
    the job it already has instead of uploading again; a changed file gets a new
    key. None when the file cannot be seen (the daemon's answer will say why).
    """
    try:
        stat = os.stat(str(body["src_path"]))
    except OSError:
        return None
    identity = {
        "request": body,
        "file": [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"charmlib-{digest}-{attempt}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:\d\d)$"
)


def _timestamp(text: Any) -> Optional[float]:
    """Seconds since the epoch of an RFC 3339 time, or None."""
    match = _RFC3339.match(str(text))
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float("0." + match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    offset = datetime.timedelta(0)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    moment = datetime.datetime(
        year, month, day, hour, minute, second, tzinfo=datetime.timezone(offset)
    )
    return moment.timestamp() + fraction


def _failed_before(job: Mapping[str, Any], since: float) -> bool:
    """Whether `job` failed in an earlier run: created over a second before `since`."""
    created = _timestamp(job.get("created_at"))
    return job.get("state") == "failed" and created is not None and created < since - 1.0


class OpenstackManager:
    """Class to manage interactions with Openstack, through the openstack-image-helper daemon.

    Attributes:
        clouds: the clouds the daemon took from `cloud_config` (empty when None was given).
        default_cloud: the first cloud of `cloud_config`, in the document's order: sent
            as `cloud` on every call that names none. None when `cloud_config` was None
            (the daemon's own `default_cloud` decides then).
    """

    def __init__(
        self,
        cloud_config: Optional[Mapping[str, Any]],
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        request_timeout: float = 120.0,
    ) -> None:
        """Put the clouds into the daemon (`PUT /v1/clouds`).

        The daemon authenticates to every cloud before it takes the document; a
        document equal to the one in force costs nothing, so hooks may build a
        manager on every run.

        Args:
            cloud_config: The parsed cloud config yaml contents (`{"clouds": {...}}`),
                or None to use the clouds the daemon already has. Its first cloud is
                the default cloud of every call.
            url: The daemon's address: `http://host:port` or `unix:/path`. Default:
                `$OPENSTACK_IMAGE_HELPER_URL`, else `http://127.0.0.1:8427`.
            token: The daemon's API token. Default: read from `token_file`.
            token_file: The file holding the API token. Default:
                `$OPENSTACK_IMAGE_HELPER_TOKEN_FILE`, else
                `/var/lib/openstack-image-helper/api-token`.
            request_timeout: Seconds to wait for each answer of the daemon (an
                upload's own limit is `upload_image`'s `timeout`).

        Raises:
            UnauthorizedError: If an invalid openstack credentials was given (the
                daemon's `openstack_unauthorized`: also a `CredentialsError`), the
                document was refused (`invalid_clouds_yaml`), or the daemon refused the
                API token (`unauthorized`: also an `ApiTokenError`).
            OpenstackConnectionError: If the daemon cannot be reached (also a
                `DaemonUnreachableError`), its token cannot be read, or it could not
                reach OpenStack.
        """
        self._connect(url, token, token_file, request_timeout)
        self.clouds: List[str] = []
        self.default_cloud: Optional[str] = None
        if cloud_config is not None:
            clouds = cloud_config.get("clouds")
            if isinstance(clouds, Mapping) and clouds:
                self.default_cloud = str(next(iter(clouds)))
            self.clouds = self._put_clouds(body=dict(cloud_config))

    def _connect(
        self, url: Optional[str], token: Optional[str], token_file: Optional[str], timeout: float
    ) -> None:
        daemon_url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        if token is None:
            token = _read_token(token_file or os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)
        self._daemon = _Daemon(daemon_url, token, timeout)
        # The daemon's version, once asked (`daemon_version`); "" for "it does not say".
        self._version: Optional[str] = None

    @classmethod
    def from_secret_content(
        cls,
        content: Mapping[str, str],
        *,
        key: str = SECRET_CLOUDS_KEY,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        request_timeout: float = 120.0,
    ) -> "OpenstackManager":
        """Put the clouds.yaml of a Juju secret into the daemon.

        The secret holds the clouds.yaml text under the key `clouds-yaml` (the
        operator: `juju add-secret openstack-clouds clouds-yaml#file=clouds.yaml`).
        The text goes to the daemon as it is (it parses YAML; this library stays
        standard library only). The default cloud is the document's first, read from
        its block layout (`clouds:` then an indented name); a document in flow style
        leaves it to the daemon.

        Args:
            content: The secret's content, as `ops.Secret.get_content()` gives it.
            key: The content's key holding clouds.yaml.
            url: As for `OpenstackManager`.
            token: As for `OpenstackManager`.
            token_file: As for `OpenstackManager`.
            request_timeout: As for `OpenstackManager`.

        Returns:
            The manager, with the clouds in force.

        Raises:
            UnauthorizedError: As for `OpenstackManager`, and when the content has no
                `key` (`code` "invalid_clouds_yaml").
            OpenstackConnectionError: As for `OpenstackManager`.
        """
        text = content.get(key)
        if not isinstance(text, str) or not text.strip():
            raise _error(
                UnauthorizedError,
                f"the secret's content has no {key!r} (keys: {sorted(content)})",
                code=CODE_INVALID_CLOUDS_YAML,
            )
        manager = cls.__new__(cls)
        manager._connect(url, token, token_file, request_timeout)
        manager.default_cloud = _first_yaml_cloud(text)
        manager.clouds = manager._put_clouds(yaml_text=text)
        return manager

    def __enter__(self) -> "OpenstackManager":
        """Use the manager in a `with` block, as the old module allowed.

        Returns:
            The manager itself.
        """
        return self

    def __exit__(self, *_args: object) -> None:
        """End a `with` block: nothing to close (each call is its own connection)."""

    def _put_clouds(
        self, body: Optional[Dict[str, Any]] = None, yaml_text: Optional[str] = None
    ) -> List[str]:
        logger.debug("putting clouds into the daemon (default %s)", self.default_cloud)
        try:
            answer = self._daemon.request("PUT", "/v1/clouds", body=body, yaml_body=yaml_text)
        except _UnreachableError as exc:
            raise _unreachable(OpenstackConnectionError, exc) from exc
        if answer.status == 200:
            return [str(name) for name in answer.body.get("clouds", [])]
        err = answer.error()
        text = f"the daemon refused the clouds: {err['code']}: {err['message']}"
        old: Type[OpenstackImageHelperError] = OpenstackConnectionError
        if err["code"] in (
            CODE_OPENSTACK_UNAUTHORIZED,
            CODE_INVALID_CLOUDS_YAML,
            CODE_UNAUTHORIZED,
        ):
            old = UnauthorizedError
        raise _error(
            old, text, code=err["code"], status=answer.status, retry_after=answer.retry_after
        )

    def daemon_version(self) -> Optional[str]:
        """The daemon's version, from `GET /v1/health` (asked once per manager).

        A daemon older than 0.3 does not say it there; 0.2 says it in `/v1/status`.

        Returns:
            The version (`"0.3.0"`); None for a daemon that does not say (0.1).

        Raises:
            OpenstackConnectionError: If the daemon cannot be reached (also a
                `DaemonUnreachableError`).
        """
        if self._version is None:
            try:
                answer = self._daemon.request("GET", "/v1/health")
            except _UnreachableError as exc:
                raise _unreachable(OpenstackConnectionError, exc) from exc
            self._version = str(answer.body.get("version") or "")
            if not self._version:  # 0.2: only /v1/status says (and needs the token)
                with contextlib.suppress(_UnreachableError):
                    status = self._daemon.request("GET", "/v1/status")
                    self._version = str(status.body.get("version") or "")
        return self._version or None

    def require_daemon(self, minimum: str, feature: str) -> None:
        """Check that the daemon is at least `minimum` before using `feature`.

        Args:
            minimum: The version the feature needs (`"0.3.0"`).
            feature: What needs it, in words, for the message.

        Raises:
            DaemonTooOldError: If the daemon is older (`code` "daemon_too_old"); the
                message names the feature, both versions and the fix.
        """
        version = self.daemon_version()
        if version is not None and _version_tuple(version) >= _version_tuple(minimum):
            return
        exc = _error(
            DaemonTooOldError,
            f"{feature} needs openstack-image-helper {minimum} or newer, and the daemon at "
            f"{self._daemon.url} is {version or 'older than 0.2 (it does not say its version)'}"
            ": upgrade its package (the charm's openstack-image-helper resource)",
            code=CODE_DAEMON_TOO_OLD,
        )
        exc.version, exc.required = version, minimum
        raise exc

    def status(self) -> DaemonStatus:
        """The daemon's state (`GET /v1/status`): its clouds, uploads and version.

        Returns:
            The status, with `version` from `/v1/health` when `/v1/status` lacks it.

        Raises:
            OpenstackImageHelperError: A `TransientError` (the daemon unreachable: also an
                `OpenstackConnectionError`) or a `PermanentError` (`ApiTokenError`, ...).
        """
        try:
            answer = self._daemon.request("GET", "/v1/status")
        except _UnreachableError as exc:
            raise _unreachable(OpenstackConnectionError, exc) from exc
        if answer.status != 200:
            err = answer.error()
            raise _error(
                OpenstackImageHelperError,
                f"status: {err['code']}: {err['message']}",
                code=err["code"],
                status=answer.status,
                retry_after=answer.retry_after,
            )
        status = DaemonStatus.from_answer(answer.body)
        if status.version is None:
            status = dataclasses.replace(status, version=self.daemon_version())
        return status

    def get_latest_image_id(
        self,
        image_base: _Named,
        app_name: str,
        arch: _Named,
        *,
        cloud: Optional[str] = None,
    ) -> Optional[str]:
        """Fetch the latest image id.

        Args:
            image_base: The image OS base to search for (`BaseImage` member or `"jammy"`).
            app_name: The charm application name.
            arch: The architecture (`Arch` member or `"x64"`).
            cloud: The cloud to ask. Default: `default_cloud`.

        Returns:
            The id of the newest active image of that name if exists, None otherwise.

        Raises:
            GetImageError: If there was an error fetching the image id; each is also a
                `TransientError` (when the daemon could not be reached: an
                `OpenstackConnectionError` too) or a `PermanentError`.
        """
        latest = self.get_latest_image(image_base, app_name, arch, cloud=cloud)
        return None if latest is None else latest.id

    def get_latest_image(
        self,
        image_base: _Named,
        app_name: str,
        arch: _Named,
        *,
        cloud: Optional[str] = None,
    ) -> Optional[LatestImage]:
        """Fetch the latest image: its id, name and creation time.

        Args:
            image_base: As for `get_latest_image_id`.
            app_name: As for `get_latest_image_id`.
            arch: As for `get_latest_image_id`.
            cloud: As for `get_latest_image_id`.

        Returns:
            The newest active image of that name, or None when there is none.

        Raises:
            GetImageError: As for `get_latest_image_id`.
        """
        query = {"base": _value(image_base), "app_name": app_name, "arch": _value(arch)}
        cloud = cloud or self.default_cloud
        if cloud is not None:
            query["cloud"] = cloud
        try:
            answer = self._daemon.request("GET", "/v1/images/latest", query=query)
        except _UnreachableError as exc:
            raise _unreachable(GetImageError, exc) from exc
        if answer.status != 200:
            err = answer.error()
            raise _error(
                GetImageError,
                f"latest image of {query}: {err['code']}: {err['message']}",
                code=err["code"],
                status=answer.status,
                retry_after=answer.retry_after,
            )
        image_id = answer.body.get("id")
        logger.debug("latest %s: %s", answer.body.get("name"), image_id)
        if image_id is None:
            return None
        name, created = answer.body.get("name"), answer.body.get("created_at")
        return LatestImage(str(image_id), str(name), created, cloud)

    def upload_image(
        self,
        config: UploadImageConfig,
        *,
        cloud: Optional[str] = None,
        skip_unchanged: bool = False,
        timeout: Optional[float] = None,
    ) -> str:
        """Upload image to openstack glance, keeping `num_revisions` revisions.

        The upload is a job of the daemon, followed until it ends. If the hook
        dies meanwhile, the job goes on, and the same call in the next run
        follows it instead of uploading again. `upload` gives the whole result.

        Args:
            config: Configuration values for creating image.
            cloud: The cloud to upload to. Default: `default_cloud`.
            skip_unchanged: Upload nothing when the newest image of the name has the
                same size and hash as the file; its id is returned then.
            timeout: Seconds to wait for the upload to end; None waits as long as it
                takes. When it runs out the job goes on in the daemon.

        Returns:
            The created image ID.

        Raises:
            UploadImageError: If there was an error uploading the image to Openstack
                Glance (`code` holds the daemon's code), or the timeout ran out
                (`code` "timeout", `job_id` the job); when the daemon could not be
                reached it is an `OpenstackConnectionError` too. Each is also a
                `TransientError` or a `PermanentError`.
        """
        return self.upload(config, cloud=cloud, skip_unchanged=skip_unchanged, timeout=timeout).id

    def upload(
        self,
        config: UploadImageConfig,
        *,
        cloud: Optional[str] = None,
        skip_unchanged: bool = False,
        timeout: Optional[float] = None,
    ) -> UploadResult:
        """Upload image to one cloud and follow the job to its end, as `upload_image`.

        Args:
            config: Configuration values for creating image.
            cloud: The cloud to upload to. Default: `default_cloud`.
            skip_unchanged: Upload nothing when the newest image of the name has the
                same size and hash as the file (`unchanged` in the result).
            timeout: Seconds to wait for the upload to end; None waits as long as it
                takes. When it runs out the job goes on in the daemon.

        Returns:
            The image, active and verified, and what the upload did.

        Raises:
            UploadImageError: As `upload_image`.
        """
        body = self._upload_body(config, skip_unchanged, cloud or self.default_cloud)
        deadline = None if timeout is None else time.monotonic() + timeout
        final = self._start(body, deadline)
        if "job" in final:
            final = self._follow(final, deadline)
        return self._result(final, body)

    def start_upload(
        self,
        config: UploadImageConfig,
        *,
        cloud: Optional[str] = None,
        skip_unchanged: bool = False,
    ) -> Job:
        """Start an upload and return at once; the job goes on in the daemon.

        The same call in a later hook run gets the same job (while the daemon keeps
        it), so a charm may start an upload in one hook and `get_job` it in the next.

        Args:
            config: Configuration values for creating image.
            cloud: The cloud to upload to. Default: `default_cloud`.
            skip_unchanged: As for `upload`.

        Returns:
            The job: `refresh()` reads it again, `wait()` follows it to its result.

        Raises:
            UploadImageError: If the daemon refused the upload, as for `upload_image`.
        """
        body = self._upload_body(config, skip_unchanged, cloud or self.default_cloud)
        answer = self._start(body, None)
        if "job" not in answer:  # a daemon without jobs (0.1) answered the upload itself
            return Job.from_answer(
                {"job": "", "state": "succeeded", "image_id": answer.get("id"), "result": answer},
                self,
            )
        return Job.from_answer(answer, self)

    @staticmethod
    def _result(final: Mapping[str, Any], request: Mapping[str, Any]) -> UploadResult:
        """The result of a finished upload (a `201` answer or an ended job), or its error."""
        cloud = request.get("cloud")
        if "job" not in final:
            return UploadResult.from_answer(final, cloud)
        job = Job.from_answer(final)
        result = final.get("result")
        if job.state == "succeeded" and isinstance(result, Mapping):
            return UploadResult.from_answer(result, cloud)
        if job.state == "succeeded" and job.image_id is not None:  # a 0.2 job without result
            return UploadResult.from_answer({"id": job.image_id}, cloud)
        raise _error(
            UploadImageError,
            f"upload of {request.get('src_path')} failed: {job.error_code}: {job.error_message}",
            code=job.error_code,
            job_id=job.id,
        )

    def upload_image_to_clouds(
        self,
        config: UploadImageConfig,
        clouds: Sequence[str],
        *,
        skip_unchanged: bool = False,
        timeout: Optional[float] = None,
    ) -> Dict[str, str]:
        """Upload image to several clouds from one read of the file.

        Each cloud gets its own image, verification and prune; a failing cloud does
        not stop the others, and the clouds that succeeded keep their new image.

        Args:
            config: Configuration values for creating image.
            clouds: The clouds' names; `["*"]` means every cloud of the daemon.
            skip_unchanged: Upload nothing to a cloud whose newest image of the name
                has the same size and hash as the file.
            timeout: Seconds to wait for the upload to end; None waits as long as it takes.

        Returns:
            Each cloud's new (or unchanged) image id.

        Raises:
            UploadImageError: If any cloud failed (`results` holds each cloud's image
                id or None, the message each failure), or as for `upload_image`.
        """
        body = self._upload_body(config, skip_unchanged, None)
        body["clouds"] = list(clouds)
        deadline = None if timeout is None else time.monotonic() + timeout
        final = self._start(body, deadline)
        if "job" in final:
            final = self._follow(final, deadline)
        per_cloud = final.get("clouds") or final.get("results") or {}
        results: Dict[str, Optional[str]] = {}
        failures = []
        for name, outcome in per_cloud.items():
            image_id = outcome.get("image_id") or outcome.get("id")
            error = outcome.get("error")
            results[name] = None if error or image_id is None else str(image_id)
            if results[name] is None:
                error = error or {"code": outcome.get("state"), "message": "no image"}
                failures.append(f"{name}: {error.get('code')}: {error.get('message')}")
        if failures or not results or final.get("state", "succeeded") != "succeeded":
            err = final.get("error") or {}
            raise _error(
                UploadImageError,
                f"upload of {config.src_path} failed: " + "; ".join(failures or [str(err)]),
                code=err.get("code", CODE_UPLOAD_IMAGE_FAILED),
                job_id=final.get("job"),
                results=results,
            )
        return {name: str(image_id) for name, image_id in results.items()}

    def get_job(self, job_id: str) -> Job:
        """Read an upload job's state (`GET /v1/jobs/{id}`).

        Args:
            job_id: The job's id (`UploadImageError.job_id`, for one).

        Returns:
            The job as the daemon has it now (`refresh()` and `wait()` follow it).

        Raises:
            UploadImageError: If the daemon has no such job (`code` "not_found") or
                answered with another error; when it could not be reached it is an
                `OpenstackConnectionError` too.
        """
        return Job.from_answer(self._job_answer(job_id), self)

    @staticmethod
    def _upload_body(
        config: UploadImageConfig, skip_unchanged: bool, cloud: Optional[str] = None
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "base": _value(config.base),
            "app_name": config.app_name,
            "arch": _value(config.arch),
            "num_revisions": config.num_revisions,
            # The daemon resolves the path, not the hook: make it absolute here.
            "src_path": os.path.abspath(os.fspath(config.src_path)),
        }
        if skip_unchanged:
            body["skip_unchanged"] = True
        if cloud is not None:
            body["cloud"] = cloud
        return body

    def _start(self, body: Dict[str, Any], deadline: Optional[float]) -> Dict[str, Any]:
        """Start the job (or find the one an earlier run started): its answer.

        A job (`"job"` in it), or the upload's own answer from a daemon without jobs.
        """
        started = time.time()
        for attempt in range(_MAX_ATTEMPTS):
            key = _idempotency_key(body, attempt)
            answer = self._post_upload(body, key, deadline)
            if answer.status == 201:
                return answer.body
            if answer.status not in (200, 202) or "job" not in answer.body:
                err = answer.error()
                raise _error(
                    UploadImageError,
                    f"upload of {body['src_path']}: {err['code']}: {err['message']}",
                    code=err["code"],
                    status=answer.status,
                    retry_after=answer.retry_after,
                    results=_cloud_errors(answer.body),
                )
            if key is not None and _failed_before(answer.body, started):
                # A job of an earlier hook run failed: a new attempt gets a new key,
                # which the next re-run finds in turn.
                logger.debug("job %s of an earlier run failed; trying again", answer.body["job"])
                continue
            return answer.body
        raise _error(
            UploadImageError,
            f"upload of {body['src_path']}: {_MAX_ATTEMPTS} attempts failed",
            code=CODE_UPLOAD_IMAGE_FAILED,
        )

    def _post_upload(
        self, body: Dict[str, Any], key: Optional[str], deadline: Optional[float]
    ) -> _Answer:
        headers = {} if key is None else {"Idempotency-Key": key}
        logger.debug("upload %s (Idempotency-Key %s)", body, key)
        # A daemon with jobs answers at once. One without (0.1) answers when the
        # upload has ended: wait for it, up to the deadline (but give a loaded
        # daemon a few seconds to take the job, however short the timeout).
        remaining = _NO_LIMIT
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), _POST_GRACE)
        try:
            if self._daemon.passes_descriptors:
                return self._post_descriptor(body, headers, remaining)
            return self._daemon.request(
                "POST",
                "/v1/images",
                query={"wait": "false"},
                body=body,
                headers=headers,
                timeout=remaining,
            )
        except _NoAnswerInTimeError as exc:
            raise _error(
                UploadImageError,
                f"upload of {body['src_path']}: the daemon did not answer in time",
                code=CODE_TIMEOUT,
            ) from exc
        except _UnreachableError as exc:
            raise _unreachable(UploadImageError, exc) from exc

    def _post_descriptor(
        self, body: Dict[str, Any], headers: Mapping[str, str], timeout: Optional[float]
    ) -> _Answer:
        """The upload with the file handed over open (`src_fd`) instead of its path.

        Over the unix socket the hook opens the file itself, so the daemon (a
        DynamicUser) reads any file the charm can: outside `upload_dirs`, or
        root's 0600. The daemon keys the job by the file's identity, so a re-run
        hook gets the same job.
        """
        path = str(body["src_path"])
        try:
            file = open(path, "rb")  # noqa: SIM115 (closed below, after the send)
        except OSError as exc:
            return _Answer(
                400,
                {"error": {"code": CODE_FILE_NOT_FOUND, "message": f"{path}: {exc.strerror}"}},
            )
        sent = {k: v for k, v in body.items() if k != "src_path"}
        sent["src_fd"] = 0
        with file:
            return self._daemon.request(
                "POST",
                "/v1/images",
                query={"wait": "false"},
                body=sent,
                headers=headers,
                timeout=timeout,
                fds=[file.fileno()],
            )

    def _follow(self, job: Mapping[str, Any], deadline: Optional[float]) -> Dict[str, Any]:
        """Poll the job until it ends, or the deadline passes."""
        job_id = str(job["job"])
        delay = _POLL_FIRST
        state = None
        while job.get("state") not in _FINAL_STATES:
            if job.get("state") != state:
                state = job.get("state")
                logger.debug("job %s: %s", job_id, state)
            wait = delay
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise _error(
                        UploadImageError,
                        f"job {job_id} still {state} when the timeout ran out; it goes on "
                        "in the daemon, and the same call follows it",
                        code=CODE_TIMEOUT,
                        job_id=job_id,
                    )
            time.sleep(wait)
            delay = min(delay * 1.5, _POLL_MAX)
            job = self._job_answer(job_id, tolerate_restart=True)
        logger.debug("job %s: %s", job_id, job.get("state"))
        return dict(job)

    def _job_answer(self, job_id: str, tolerate_restart: bool = False) -> Dict[str, Any]:
        path = "/v1/jobs/" + urllib.parse.quote(job_id, safe="")
        first_failure: Optional[float] = None
        while True:
            try:
                answer = self._daemon.request("GET", path)
                break
            except _UnreachableError as exc:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if not tolerate_restart or now - first_failure > _RECONNECT_WINDOW:
                    raise _unreachable(UploadImageError, exc, job_id=job_id) from exc
                time.sleep(1.0)
        if answer.status != 200:
            err = answer.error()
            raise _error(
                UploadImageError,
                f"job {job_id}: {err['code']}: {err['message']}",
                code=err["code"],
                status=answer.status,
                retry_after=answer.retry_after,
                job_id=job_id,
            )
        return answer.body


def _unreachable(call: Type[_E], exc: Exception, **extra: Any) -> _E:
    """The error of `call`'s type for a daemon that could not be reached."""
    return _error(
        call,
        f"the openstack-image-helper daemon is unreachable: {exc}",
        code=CODE_DAEMON_UNREACHABLE,
        **extra,
    )


def _version_tuple(version: str) -> Tuple[int, ...]:
    """`"0.3.0"` as `(0, 3, 0)`; what follows the numbers (`-rc1`) is ignored."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else (0,)


_YAML_CLOUDS = re.compile(r"^clouds:\s*(?:#.*)?$")
_YAML_KEY = re.compile(r"""^(\s+)(?:"([^"]+)"|'([^']+)'|([^\s#'"][^:#]*?))\s*:(?:\s|$)""")


def _yaml_cloud_names(text: str) -> List[str]:
    """The clouds' names, in order, of a clouds.yaml text of block layout (else [])."""
    lines = iter(text.splitlines())
    for line in lines:
        if _YAML_CLOUDS.match(line):
            break
    names: List[str] = []
    indent = None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = _YAML_KEY.match(line)
        if key is None:
            if not line[:1].isspace():
                break  # the next top-level key
            continue
        if indent is None:
            indent = key.group(1)
        if key.group(1) == indent:
            names.append(next(g for g in key.groups()[1:] if g))
    return names


def _first_yaml_cloud(text: str) -> Optional[str]:
    """The first cloud's name in a clouds.yaml text of block layout, or None."""
    names = _yaml_cloud_names(text)
    return names[0] if names else None


def _cloud_errors(body: Mapping[str, Any]) -> Dict[str, Optional[str]]:
    """Per cloud, the image id or None, from a failed answer of several clouds."""
    results = body.get("results") or {}
    return {
        str(name): (None if "error" in outcome else outcome.get("id"))
        for name, outcome in results.items()
        if isinstance(outcome, dict)
    }
