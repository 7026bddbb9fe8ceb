"""The typed API (0.3) against the real daemon, Keystone and Glance.

`upload() -> UploadResult`, `start_upload() -> Job`, `status() -> DaemonStatus`, the
error kinds, the version check and `from_secret_content`. Tests of what only a 0.3
daemon does are marked `needs_daemon_03`: they are expected to fail (strict xfail,
reported by `-ra`) against an older daemon, and run as any test against 0.3.
"""

import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import yaml

import charms.openstack_image_helper.v0.openstack_manager as openstack_manager
from charms.openstack_image_helper.v0.openstack_manager import (
    CODE_DAEMON_TOO_OLD,
    CODE_DAEMON_UNREACHABLE,
    CODE_OPENSTACK_UNAUTHORIZED,
    CODE_PATH_NOT_ALLOWED,
    CODE_SHUTTING_DOWN,
    CODE_TIMEOUT,
    CODE_TOO_MANY_UPLOADS,
    CODE_UNAUTHORIZED,
    ApiTokenError,
    CredentialsError,
    DaemonTooOldError,
    DaemonUnreachableError,
    GetImageError,
    OpenstackConnectionError,
    OpenstackManager,
    PermanentError,
    TransientError,
    UnauthorizedError,
    UploadImageConfig,
    UploadImageError,
)
from conftest import Bed, Daemon, DaemonFactory, free_port, md5_of, next_second

MIB = 1 << 20


def config(app_name: str, src: Path, num_revisions: int = 2) -> UploadImageConfig:
    """The upload of `src` as jammy/x64 of `app_name`."""
    return UploadImageConfig("x64", app_name, "jammy", num_revisions, src)


def md5(path: Path) -> str:
    """The file's md5, as Glance's `checksum` gives it."""
    return md5_of(path.read_bytes())


def health(daemon: Daemon) -> Dict[str, Any]:
    """`GET /v1/health`, outside the library."""
    return dict(daemon.request("GET", "/v1/health"))


def is_03(daemon: Daemon) -> bool:
    """Whether the daemon says it is 0.3 or newer."""
    version = str(health(daemon).get("version", "0"))
    return tuple(int(n) for n in version.split("-")[0].split(".")) >= (0, 3)


def needs_03(daemon: Daemon) -> None:
    """Mark the running test as expected to fail against a daemon older than 0.3."""
    if not is_03(daemon):
        pytest.xfail(f"the daemon is not 0.3 (/v1/health: {health(daemon)})")


# --- upload() -> UploadResult -----------------------------------------------------------


def test_upload_result_is_the_image_in_glance(bed: Bed, daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(bed.document("charm", "admin"), **daemon.kwargs())
    src = daemon.image_file(2 * MIB + 5)
    first = manager.upload(config(app_name, src, num_revisions=1))
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert (first.id, first.name, first.cloud) == (image["id"], image["name"], "charm")
    assert (
        (first.size, first.checksum)
        == (src.stat().st_size, md5(src))
        == (
            image["size"],
            image["checksum"],
        )
    )
    # `stores`: what Glance says the image is in (the bed's RegionOne Glance names its
    # one file store `fs`), or None where Glance has no stores.
    glance_stores = image["stores"].split(",") if image.get("stores") else None
    assert (first.pruned, first.unchanged, first.stores) == ([], False, glance_stores)
    assert first.attempts >= 1
    # A second revision with num_revisions 1 prunes the first: the result says so.
    second_src = daemon.image_file(MIB, name="second.img")
    next_second()
    second = manager.upload(config(app_name, second_src, num_revisions=1))
    assert second.pruned == [first.id]
    assert [i["id"] for i in bed.images("charm", f"jammy-{app_name}-x64")] == [second.id]
    # The same bytes again with skip_unchanged: the same image, unchanged.
    same = manager.upload(config(app_name, second_src, num_revisions=1), skip_unchanged=True)
    assert (same.id, same.unchanged, same.pruned) == (second.id, True, [])


def test_upload_to_the_second_cloud_says_so(bed: Bed, daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(bed.document("charm", "admin"), **daemon.kwargs())
    result = manager.upload(config(app_name, daemon.image_file(MIB)), cloud="admin")
    assert result.cloud == "admin"
    assert [i["id"] for i in bed.images("admin", f"jammy-{app_name}-x64")] == [result.id]
    assert bed.images("charm", f"jammy-{app_name}-x64") == []


def test_upload_result_carries_the_03_fields(bed: Bed, daemon: Daemon, app_name: str) -> None:
    needs_03(daemon)
    manager = OpenstackManager(None, **daemon.kwargs())
    result = manager.upload(config(app_name, daemon.image_file(MIB)))
    assert result.attempts == int(result.raw["attempts"]) == 1
    assert (result.format, result.disk_format) == ("raw", "raw")
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert image["disk_format"] == result.disk_format


# --- start_upload() -> Job ---------------------------------------------------------------


def test_start_upload_returns_at_once_and_wait_gives_the_result(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(32 * MIB)
    started = time.monotonic()
    job = manager.start_upload(config(app_name, src))
    assert job.state in ("queued", "uploading", "verifying", "pruning", "succeeded")
    assert job.bytes_total == src.stat().st_size
    seen = [job.bytes_sent]
    while not job.refresh().done and time.monotonic() - started < 60:
        seen.append(job.bytes_sent)
        progress = job.progress
        assert progress is not None
        assert 0.0 <= progress <= 1.0
        time.sleep(0.05)
    assert seen == sorted(seen)
    result = job.wait(timeout=60)
    assert (job.state, job.progress, job.image_id) == ("succeeded", 1.0, result.id)
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert (image["id"], image["status"], image["checksum"]) == (result.id, "active", md5(src))
    # get_job reads the same job, and its wait gives the same result.
    assert manager.get_job(job.id).wait().id == result.id


def test_the_same_start_upload_in_the_next_hook_is_the_same_job(
    daemon: Daemon, app_name: str
) -> None:
    src = daemon.image_file(8 * MIB)
    first = OpenstackManager(None, **daemon.kwargs()).start_upload(config(app_name, src))
    again = OpenstackManager(None, **daemon.kwargs()).start_upload(config(app_name, src))
    assert again.id == first.id
    assert again.wait().id == first.wait().id


def test_a_job_timeout_is_transient_and_the_job_goes_on(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    job = manager.start_upload(config(app_name, daemon.image_file(48 * MIB)))
    with pytest.raises(TransientError) as caught:
        job.wait(timeout=0.01)
    assert isinstance(caught.value, UploadImageError)
    assert (caught.value.code, caught.value.job_id) == (CODE_TIMEOUT, job.id)
    assert job.wait().id == manager.get_job(job.id).image_id


# --- status() -> DaemonStatus ------------------------------------------------------------


def test_status_is_typed(bed: Bed, daemon: Daemon) -> None:
    status = OpenstackManager(None, **daemon.kwargs()).status()
    assert sorted((c.name, c.authenticated) for c in status.clouds) == [
        ("admin", True),
        ("charm", True),
    ]
    assert status.default_cloud == "charm"
    assert status.version == daemon.status()["version"]
    assert status.uploads_in_flight >= 0
    assert set(status.jobs) >= {"queued", "succeeded", "failed"}
    assert "password" not in repr(status)


# --- errors: kinds and codes --------------------------------------------------------------


def test_a_refused_path_is_permanent_and_an_upload_error(
    daemon: Daemon, app_name: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"\0" * 512)
    with pytest.raises(PermanentError) as caught:
        OpenstackManager(None, **daemon.kwargs()).upload(config(app_name, outside))
    assert isinstance(caught.value, UploadImageError)
    assert not isinstance(caught.value, TransientError)
    assert caught.value.code == CODE_PATH_NOT_ALLOWED


def test_an_unreachable_daemon_is_transient_for_every_call(tmp_path: Path, app_name: str) -> None:
    kwargs: Dict[str, Any] = {"url": f"http://127.0.0.1:{free_port()}", "token": "t"}
    src = tmp_path / "image.img"
    src.write_bytes(b"x")
    calls: Dict[type, Callable[[], object]] = {
        OpenstackConnectionError: lambda: OpenstackManager({"clouds": {"a": {}}}, **kwargs),
        GetImageError: lambda: OpenstackManager(None, **kwargs).get_latest_image_id(
            "jammy", app_name, "x64"
        ),
        UploadImageError: lambda: OpenstackManager(None, **kwargs).upload(config(app_name, src)),
    }
    for old, call in calls.items():
        with pytest.raises(DaemonUnreachableError) as caught:
            call()
        assert isinstance(caught.value, TransientError)
        assert isinstance(caught.value, OpenstackConnectionError)
        assert isinstance(caught.value, old)
        assert caught.value.code == CODE_DAEMON_UNREACHABLE
    with pytest.raises(DaemonUnreachableError):
        OpenstackManager(None, **kwargs).status()


def test_the_daemons_token_is_told_apart_from_openstacks_credentials(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    with pytest.raises(ApiTokenError) as token:
        OpenstackManager(bed.document("charm"), url=daemon.url, token="not-the-token")
    assert isinstance(token.value, UnauthorizedError)  # the old type of the constructor
    assert not isinstance(token.value, CredentialsError)
    assert (token.value.code, token.value.status) == (CODE_UNAUTHORIZED, 401)
    with pytest.raises(ApiTokenError) as upload:
        OpenstackManager(None, url=daemon.url, token="not-the-token").upload(
            config(app_name, daemon.image_file(10, name="token.img"))
        )
    assert isinstance(upload.value, UploadImageError)

    wrong = bed.document("charm")
    wrong["clouds"]["charm"]["auth"]["password"] = "not-the-password"
    with pytest.raises(CredentialsError) as credentials:
        OpenstackManager(wrong, **daemon.kwargs())
    assert isinstance(credentials.value, UnauthorizedError)
    assert not isinstance(credentials.value, ApiTokenError)
    assert credentials.value.code == CODE_OPENSTACK_UNAUTHORIZED
    assert "not-the-password" not in str(credentials.value)


def test_a_stopping_daemon_is_transient(
    bed: Bed, start_daemon: DaemonFactory, app_name: str
) -> None:
    daemon = start_daemon(bed.document("charm"))
    manager = OpenstackManager(None, **daemon.kwargs())
    # An upload under way keeps the daemon in its shutdown grace after SIGTERM.
    manager.start_upload(config(app_name, daemon.image_file(128 * MIB)))
    late = config(app_name, daemon.image_file(10, name="late.img"))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    seen: List[TransientError] = []
    while time.monotonic() < deadline and CODE_SHUTTING_DOWN not in [e.code for e in seen]:
        try:
            manager.upload(late)
        except TransientError as exc:
            seen.append(exc)
    [stopping] = [e for e in seen if e.code == CODE_SHUTTING_DOWN]
    assert isinstance(stopping, UploadImageError)
    assert stopping.status == 503


def test_a_full_queue_is_transient_with_retry_after(
    bed: Bed, daemon: Daemon, start_daemon: DaemonFactory, app_name: str
) -> None:
    needs_03(daemon)
    small = start_daemon(
        bed.document("charm"),
        extra_config={"max_concurrent_uploads": 1, "max_queued_uploads": 1},
    )
    manager = OpenstackManager(None, **small.kwargs())
    # One uploading, one queued: the third is refused until a slot frees.
    for n in range(2):
        manager.start_upload(config(app_name, small.image_file(64 * MIB, name=f"q{n}.img")))
    with pytest.raises(TransientError) as caught:
        manager.start_upload(config(app_name, small.image_file(10, name="third.img")))
    assert isinstance(caught.value, UploadImageError)
    assert (caught.value.code, caught.value.status) == (CODE_TOO_MANY_UPLOADS, 429)
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0


# --- the version check ----------------------------------------------------------------


def test_the_version_check_names_the_feature_and_both_versions(daemon: Daemon) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    version = manager.daemon_version()
    # 0.3 says it in /v1/health; 0.2 only in /v1/status.
    assert version == health(daemon).get("version", daemon.status()["version"])
    manager.require_daemon("0.1.0", "uploads")  # every daemon is at least that
    with pytest.raises(DaemonTooOldError) as caught:
        manager.require_daemon("99.0.0", "time travel")
    assert isinstance(caught.value, PermanentError)
    assert caught.value.code == CODE_DAEMON_TOO_OLD
    assert (caught.value.version, caught.value.required) == (version, "99.0.0")
    assert "time travel needs openstack-image-helper 99.0.0 or newer" in str(caught.value)
    assert daemon.url in str(caught.value)


def test_health_gives_the_version_the_library_checks(daemon: Daemon) -> None:
    needs_03(daemon)
    answer = health(daemon)
    assert answer == {"status": "ok", "version": answer["version"], "api": 1}
    OpenstackManager(None, **daemon.kwargs()).require_daemon("0.3.0", "0.3's fields")


# --- from_secret_content ------------------------------------------------------------------


def test_clouds_from_a_juju_secret_keep_their_order(
    bed: Bed, start_daemon: DaemonFactory, app_name: str
) -> None:
    daemon = start_daemon(None)
    document = bed.document("charm", "admin")
    text = yaml.safe_dump(
        {"clouds": {"zeta": document["clouds"]["charm"], "alpha": document["clouds"]["admin"]}},
        sort_keys=False,
    )
    manager = OpenstackManager.from_secret_content({"clouds-yaml": text}, **daemon.kwargs())
    assert manager.default_cloud == "zeta"
    assert sorted(manager.clouds) == ["alpha", "zeta"]
    result = manager.upload(config(app_name, daemon.image_file(MIB)))
    assert result.cloud == "zeta"
    assert [i["id"] for i in bed.images("charm", f"jammy-{app_name}-x64")] == [result.id]
    # The same secret in the next hook: no Keystone call (the document is the same).
    before = sum(int(c["token_requests"]) for c in daemon.status()["clouds"])
    OpenstackManager.from_secret_content({"clouds-yaml": text}, **daemon.kwargs())
    assert sum(int(c["token_requests"]) for c in daemon.status()["clouds"]) == before


def test_a_secret_without_clouds_yaml_is_refused_before_the_daemon(daemon: Daemon) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        OpenstackManager.from_secret_content({"password": "x"}, **daemon.kwargs())
    assert "clouds-yaml" in str(caught.value)
    assert "'x'" not in str(caught.value)


# --- get_latest_image -----------------------------------------------------------------


def test_latest_image_has_glances_name_and_creation_time(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    assert manager.get_latest_image("jammy", app_name, "x64") is None
    result = manager.upload(config(app_name, daemon.image_file(MIB)))
    latest = manager.get_latest_image("jammy", app_name, "x64")
    assert latest is not None
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert (latest.id, latest.name) == (result.id, image["name"])
    assert latest.created_at is not None
    assert openstack_manager._timestamp(latest.created_at) == openstack_manager._timestamp(
        image["created_at"]
    )
