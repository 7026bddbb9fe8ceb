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
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Union

# The unique identifier of this library: never changes.
LIBID = "5e7f90be85364369887fc42388b6b10b"

# The major version: bumped on changes that break a charm using the library.
LIBAPI = 0

# The minor version: bumped on every change published within LIBAPI.
LIBPATCH = 1

__all__ = [
    "DEFAULT_TOKEN_FILE",
    "DEFAULT_URL",
    "IMAGE_NAME_TMPL",
    "TOKEN_FILE_ENV",
    "URL_ENV",
    "GetImageError",
    "Job",
    "OpenstackConnectionError",
    "OpenstackImageHelperError",
    "OpenstackManager",
    "UnauthorizedError",
    "UploadImageConfig",
    "UploadImageError",
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
    """

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


class _GetImageConnectionError(GetImageError, OpenstackConnectionError):
    """The daemon could not be reached during `get_latest_image_id`: both kinds at once."""


class _UploadImageConnectionError(UploadImageError, OpenstackConnectionError):
    """The daemon could not be reached during an upload: both kinds at once."""


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
class Job:
    """An upload job as the daemon reports it (`GET /v1/jobs/{id}`).

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

    @property
    def done(self) -> bool:
        """Whether the job has ended (`succeeded` or `failed`)."""
        return self.state in _FINAL_STATES

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> "Job":
        """Read a job from the daemon's JSON answer.

        Args:
            answer: the body of `GET /v1/jobs/{id}` (or of the upload's `202`).

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
        )


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: `http.client` with the socket swapped."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

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

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixHTTPConnection(self._socket_path, timeout)
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
    ) -> _Answer:
        """Send one request and read the JSON answer (`timeout`: None is the manager's).

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
            data = json.dumps(body, sort_keys=True, default=str).encode()
            send_headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        logger.debug("%s %s (daemon %s)", method, target, self.url)
        try:
            conn.request(method, target, body=data, headers=send_headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
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
        return _Answer(status, parsed)


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
    """Class to manage interactions with Openstack, through the openstack-image-helper daemon."""

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
                or None to use the clouds the daemon already has.
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
                daemon's `openstack_unauthorized`), the document was refused
                (`invalid_clouds_yaml`), or the daemon refused the API token.
            OpenstackConnectionError: If the daemon cannot be reached (or its
                token read), or it could not reach OpenStack.
        """
        daemon_url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        if token is None:
            token = _read_token(token_file or os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)
        self._daemon = _Daemon(daemon_url, token, request_timeout)
        # The clouds the daemon has taken from `cloud_config` (empty when None was given).
        self.clouds: List[str] = []
        if cloud_config is not None:
            self.clouds = self._put_clouds(cloud_config)

    def __enter__(self) -> "OpenstackManager":
        """Use the manager in a `with` block, as the old module allowed.

        Returns:
            The manager itself.
        """
        return self

    def __exit__(self, *_args: object) -> None:
        """End a `with` block: nothing to close (each call is its own connection)."""

    def _put_clouds(self, cloud_config: Mapping[str, Any]) -> List[str]:
        clouds = cloud_config.get("clouds")
        names = sorted(str(name) for name in clouds) if isinstance(clouds, Mapping) else []
        logger.debug("putting clouds %s into the daemon", names)
        try:
            answer = self._daemon.request("PUT", "/v1/clouds", body=dict(cloud_config))
        except _UnreachableError as exc:
            raise OpenstackConnectionError(
                f"the openstack-image-helper daemon is unreachable: {exc}"
            ) from exc
        if answer.status == 200:
            return [str(name) for name in answer.body.get("clouds", [])]
        err = answer.error()
        text = f"the daemon refused the clouds: {err['code']}: {err['message']}"
        if err["code"] in ("openstack_unauthorized", "invalid_clouds_yaml", "unauthorized"):
            raise UnauthorizedError(text, code=err["code"], status=answer.status)
        raise OpenstackConnectionError(text, code=err["code"], status=answer.status)

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
            cloud: The cloud to ask. Default: the daemon's default cloud.

        Returns:
            The id of the newest active image of that name if exists, None otherwise.

        Raises:
            GetImageError: If there was an error fetching the image id; when the
                daemon could not be reached it is an `OpenstackConnectionError` too.
        """
        query = {"base": _value(image_base), "app_name": app_name, "arch": _value(arch)}
        if cloud is not None:
            query["cloud"] = cloud
        try:
            answer = self._daemon.request("GET", "/v1/images/latest", query=query)
        except _UnreachableError as exc:
            raise _GetImageConnectionError(
                f"the openstack-image-helper daemon is unreachable: {exc}"
            ) from exc
        if answer.status != 200:
            err = answer.error()
            raise GetImageError(
                f"latest image of {query}: {err['code']}: {err['message']}",
                code=err["code"],
                status=answer.status,
            )
        image_id = answer.body.get("id")
        logger.debug("latest %s: %s", answer.body.get("name"), image_id)
        return None if image_id is None else str(image_id)

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
        follows it instead of uploading again.

        Args:
            config: Configuration values for creating image.
            cloud: The cloud to upload to. Default: the daemon's default cloud.
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
                reached it is an `OpenstackConnectionError` too.
        """
        body = self._upload_body(config, skip_unchanged)
        if cloud is not None:
            body["cloud"] = cloud
        final = self._run_upload(body, timeout)
        if "job" not in final:  # A daemon without jobs answered the upload itself.
            return str(final["id"])
        job = Job.from_answer(final)
        if job.state != "succeeded" or job.image_id is None:
            raise UploadImageError(
                f"upload of {config.src_path} failed: {job.error_code}: {job.error_message}",
                code=job.error_code,
                job_id=job.id,
            )
        return job.image_id

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
        body = self._upload_body(config, skip_unchanged)
        body["clouds"] = list(clouds)
        final = self._run_upload(body, timeout)
        per_cloud = final.get("clouds") or final.get("results") or {}
        results: Dict[str, Optional[str]] = {}
        failures = []
        for name, outcome in sorted(per_cloud.items()):
            image_id = outcome.get("image_id") or outcome.get("id")
            error = outcome.get("error")
            results[name] = None if error or image_id is None else str(image_id)
            if results[name] is None:
                error = error or {"code": outcome.get("state"), "message": "no image"}
                failures.append(f"{name}: {error.get('code')}: {error.get('message')}")
        if failures or not results or final.get("state", "succeeded") != "succeeded":
            err = final.get("error") or {}
            raise UploadImageError(
                f"upload of {config.src_path} failed: " + "; ".join(failures or [str(err)]),
                code=err.get("code", "upload_image_failed"),
                job_id=final.get("job"),
                results=results,
            )
        return {name: str(image_id) for name, image_id in results.items()}

    def get_job(self, job_id: str) -> Job:
        """Read an upload job's state (`GET /v1/jobs/{id}`).

        Args:
            job_id: The job's id (`UploadImageError.job_id`, for one).

        Returns:
            The job as the daemon has it now.

        Raises:
            UploadImageError: If the daemon has no such job (`code` "not_found") or
                answered with another error; when it could not be reached it is an
                `OpenstackConnectionError` too.
        """
        return Job.from_answer(self._job_answer(job_id))

    @staticmethod
    def _upload_body(config: UploadImageConfig, skip_unchanged: bool) -> Dict[str, Any]:
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
        return body

    def _run_upload(self, body: Dict[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
        """Start the job (or find the one an earlier run started) and follow it to its end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.time()
        for attempt in range(_MAX_ATTEMPTS):
            key = _idempotency_key(body, attempt)
            answer = self._post_upload(body, key, deadline)
            if answer.status == 201:
                return answer.body
            if answer.status not in (200, 202) or "job" not in answer.body:
                err = answer.error()
                raise UploadImageError(
                    f"upload of {body['src_path']}: {err['code']}: {err['message']}",
                    code=err["code"],
                    status=answer.status,
                    results=_cloud_errors(answer.body),
                )
            if key is not None and _failed_before(answer.body, started):
                # A job of an earlier hook run failed: a new attempt gets a new key,
                # which the next re-run finds in turn.
                logger.debug("job %s of an earlier run failed; trying again", answer.body["job"])
                continue
            return self._follow(answer.body, deadline)
        raise UploadImageError(f"upload of {body['src_path']}: {_MAX_ATTEMPTS} attempts failed")

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
            return self._daemon.request(
                "POST",
                "/v1/images",
                query={"wait": "false"},
                body=body,
                headers=headers,
                timeout=remaining,
            )
        except _NoAnswerInTimeError as exc:
            raise UploadImageError(
                f"upload of {body['src_path']}: the daemon did not answer in time",
                code="timeout",
            ) from exc
        except _UnreachableError as exc:
            raise _UploadImageConnectionError(
                f"the openstack-image-helper daemon is unreachable: {exc}"
            ) from exc

    def _follow(self, job: Dict[str, Any], deadline: Optional[float]) -> Dict[str, Any]:
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
                    raise UploadImageError(
                        f"job {job_id} still {state} when the timeout ran out; it goes on "
                        "in the daemon, and the same call follows it",
                        code="timeout",
                        job_id=job_id,
                    )
            time.sleep(wait)
            delay = min(delay * 1.5, _POLL_MAX)
            job = self._job_answer(job_id, tolerate_restart=True)
        logger.debug("job %s: %s", job_id, job.get("state"))
        return job

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
                    raise _UploadImageConnectionError(
                        f"the openstack-image-helper daemon is unreachable: {exc}",
                        job_id=job_id,
                    ) from exc
                time.sleep(1.0)
        if answer.status != 200:
            err = answer.error()
            raise UploadImageError(
                f"job {job_id}: {err['code']}: {err['message']}",
                code=err["code"],
                status=answer.status,
                job_id=job_id,
            )
        return answer.body


def _cloud_errors(body: Mapping[str, Any]) -> Dict[str, Optional[str]]:
    """Per cloud, the image id or None, from a failed answer of several clouds."""
    results = body.get("results") or {}
    return {
        str(name): (None if "error" in outcome else outcome.get("id"))
        for name, outcome in results.items()
        if isinstance(outcome, dict)
    }
