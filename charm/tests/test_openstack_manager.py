"""The library against the real daemon, Keystone and Glance: every method, every error."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest

import charms.openstack_image_helper.v0.openstack_manager as openstack_manager
from charms.openstack_image_helper.v0.openstack_manager import (
    GetImageError,
    OpenstackConnectionError,
    OpenstackManager,
    UnauthorizedError,
    UploadImageConfig,
    UploadImageError,
)
from conftest import Bed, Daemon, DaemonFactory, free_port, md5_of, next_second

MIB = 1 << 20


def config(app_name: str, src_path: Path, num_revisions: int = 2) -> UploadImageConfig:
    """The upload of `src_path` as jammy/x64 of `app_name`."""
    return UploadImageConfig(
        arch="x64", app_name=app_name, base="jammy", num_revisions=num_revisions, src_path=src_path
    )


def md5(path: Path) -> str:
    """The file's md5, as Glance's `checksum` gives it."""
    return md5_of(path.read_bytes())


def token_requests(daemon: Daemon) -> int:
    """Keystone token requests of every cloud in force, as `/v1/status` counts them."""
    return sum(int(cloud["token_requests"]) for cloud in daemon.status()["clouds"])


# --- OpenstackManager(cloud_config): PUT /v1/clouds --------------------------------------


def test_manager_puts_the_clouds_into_the_daemon(bed: Bed, start_daemon: DaemonFactory) -> None:
    daemon = start_daemon(None)
    assert daemon.status()["clouds"] == []
    manager = OpenstackManager(bed.document("charm"), **daemon.kwargs())
    assert manager.clouds == ["charm"]
    [cloud] = daemon.status()["clouds"]
    assert (cloud["name"], cloud["authenticated"]) == ("charm", True)
    assert daemon.clouds_yaml.exists()


def test_the_same_clouds_twice_cost_one_keystone_token(
    bed: Bed, start_daemon: DaemonFactory
) -> None:
    daemon = start_daemon(None)
    OpenstackManager(bed.document("charm"), **daemon.kwargs())
    first = daemon.status()["clouds"][0]
    # A new token would expire at a later second.
    time.sleep(1.1)
    OpenstackManager(bed.document("charm"), **daemon.kwargs())
    second = daemon.status()["clouds"][0]
    assert token_requests(daemon) == 1
    assert second["token_expires_at"] == first["token_expires_at"]


def test_wrong_password_is_unauthorized_and_the_old_clouds_stay(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    wrong = bed.document("charm")
    wrong["clouds"]["charm"]["auth"]["password"] = "not-the-password"
    with pytest.raises(UnauthorizedError) as caught:
        OpenstackManager(wrong, **daemon.kwargs())
    assert caught.value.code == "openstack_unauthorized"
    assert caught.value.status == 422
    assert "charm" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    # The clouds in force still answer.
    manager = OpenstackManager(None, **daemon.kwargs())
    assert manager.get_latest_image_id("jammy", app_name, "x64") is None


def test_an_unparsable_clouds_document_is_unauthorized(daemon: Daemon) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        OpenstackManager({"clouds": "not a mapping"}, **daemon.kwargs())
    assert caught.value.code == "invalid_clouds_yaml"


def test_a_wrong_api_token_is_unauthorized(bed: Bed, daemon: Daemon) -> None:
    with pytest.raises(UnauthorizedError) as caught:
        OpenstackManager(bed.document("charm", "admin"), url=daemon.url, token="wrong-token")
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)


def test_a_stopped_daemon_is_a_connection_error_for_every_call(
    bed: Bed, start_daemon: DaemonFactory, app_name: str
) -> None:
    daemon = start_daemon(bed.document("charm"))
    manager = OpenstackManager(bed.document("charm"), **daemon.kwargs())
    src = daemon.image_file(MIB)
    daemon.stop()

    with pytest.raises(OpenstackConnectionError) as put:
        OpenstackManager(bed.document("charm"), **daemon.kwargs())
    assert daemon.url in str(put.value)
    # The old module's callers catch GetImageError and UploadImageError: these are both.
    with pytest.raises(GetImageError) as latest:
        manager.get_latest_image_id("jammy", app_name, "x64")
    assert isinstance(latest.value, OpenstackConnectionError)
    with pytest.raises(UploadImageError) as upload:
        manager.upload_image(config(app_name, src))
    assert isinstance(upload.value, OpenstackConnectionError)
    with pytest.raises(UploadImageError) as job:
        manager.get_job("any")
    assert isinstance(job.value, OpenstackConnectionError)


def test_a_missing_token_file_is_a_connection_error(daemon: Daemon, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    with pytest.raises(OpenstackConnectionError) as caught:
        OpenstackManager(None, url=daemon.url, token_file=str(missing))
    assert str(missing) in str(caught.value)


# --- where the daemon is: defaults, environment, keyword arguments, unix socket ------------


def test_the_environment_finds_a_daemon_on_a_unix_socket(
    bed: Bed, start_daemon: DaemonFactory, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = start_daemon(bed.document("charm"), unix_socket=True)
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_URL", daemon.url)
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_TOKEN_FILE", str(daemon.token_file))
    manager = OpenstackManager(bed.document("charm"))
    assert manager.clouds == ["charm"]
    assert manager.get_latest_image_id("jammy", app_name, "x64") is None
    src = daemon.image_file(MIB)
    image_id = manager.upload_image(config(app_name, src))
    assert manager.get_latest_image_id("jammy", app_name, "x64") == image_id


def test_keyword_arguments_win_over_the_environment(
    daemon: Daemon, app_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_TOKEN_FILE", str(tmp_path / "missing"))
    manager = OpenstackManager(None, url=daemon.url, token=daemon.token)
    assert manager.get_latest_image_id("jammy", app_name, "x64") is None
    # Without them, the environment's dead port is used.
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_TOKEN_FILE", str(daemon.token_file))
    with pytest.raises(OpenstackConnectionError):
        OpenstackManager(None).get_latest_image_id("jammy", app_name, "x64")


def test_the_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert openstack_manager.DEFAULT_URL == "http://127.0.0.1:8427"
    assert openstack_manager.DEFAULT_TOKEN_FILE == "/var/lib/openstack-image-helper/api-token"
    monkeypatch.delenv("OPENSTACK_IMAGE_HELPER_URL", raising=False)
    monkeypatch.delenv("OPENSTACK_IMAGE_HELPER_TOKEN_FILE", raising=False)
    # Without environment or keyword arguments, the defaults are what is used (the token
    # file's is moved aside: this machine may run a daemon of its own).
    missing = tmp_path / "default-token"
    monkeypatch.setattr(openstack_manager, "DEFAULT_TOKEN_FILE", str(missing))
    with pytest.raises(OpenstackConnectionError) as caught:
        OpenstackManager(None)
    assert str(missing) in str(caught.value)
    missing.write_text("a-token\n")
    assert OpenstackManager(None)._daemon.url == openstack_manager.DEFAULT_URL


def test_a_bad_url_is_a_connection_error() -> None:
    for url in ("ftp://host/", "unix:", "http://:80", "http://127.0.0.1:99999"):
        with pytest.raises(OpenstackConnectionError, match="invalid daemon URL"):
            OpenstackManager(None, url=url, token="t")


# --- get_latest_image_id -----------------------------------------------------------------


def test_no_image_is_none(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    assert manager.get_latest_image_id("jammy", app_name, "x64") is None
    assert manager.get_latest_image_id("noble", app_name, "arm64", cloud="admin") is None


def test_bad_values_and_unknown_clouds_are_get_image_errors(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    with pytest.raises(GetImageError) as arch:
        manager.get_latest_image_id("jammy", app_name, "sparc")
    assert (arch.value.code, arch.value.status) == ("invalid_request", 400)
    assert not isinstance(arch.value, OpenstackConnectionError)
    with pytest.raises(GetImageError) as cloud:
        manager.get_latest_image_id("jammy", app_name, "x64", cloud="nowhere")
    assert cloud.value.code == "unknown_cloud"
    assert "nowhere" in str(cloud.value)


# --- upload_image ------------------------------------------------------------------------


def test_upload_then_latest_give_the_same_image(bed: Bed, daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(bed.document("charm", "admin"), **daemon.kwargs())
    src = daemon.image_file(3 * MIB + 17)
    image_id = manager.upload_image(config(app_name, src))
    assert manager.get_latest_image_id("jammy", app_name, "x64") == image_id
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert image["id"] == image_id
    assert (image["status"], image["size"], image["checksum"]) == (
        "active",
        src.stat().st_size,
        md5(src),
    )
    assert image["architecture"] == "x86_64"


def test_upload_keeps_num_revisions(bed: Bed, daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    ids = []
    for n in range(3):
        src = daemon.image_file(MIB + n, name=f"rev{n}.img")
        ids.append(manager.upload_image(config(app_name, src, num_revisions=2)))
        next_second()
    left = {image["id"] for image in bed.images("charm", f"jammy-{app_name}-x64")}
    assert left == set(ids[1:])


def test_a_file_outside_the_upload_dirs_is_path_not_allowed(
    daemon: Daemon, app_name: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"\0" * 1024)
    manager = OpenstackManager(None, **daemon.kwargs())
    with pytest.raises(UploadImageError) as caught:
        manager.upload_image(config(app_name, outside))
    assert caught.value.code == "path_not_allowed"
    assert "path_not_allowed" in str(caught.value)
    assert not isinstance(caught.value, OpenstackConnectionError)


def test_a_missing_file_is_file_not_found(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    with pytest.raises(UploadImageError) as caught:
        manager.upload_image(config(app_name, daemon.upload_dir / "missing.img"))
    assert caught.value.code == "file_not_found"


def test_bad_fields_are_invalid_request(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(1024)
    with pytest.raises(UploadImageError) as caught:
        manager.upload_image(config(app_name, src, num_revisions=0))
    assert (caught.value.code, caught.value.status) == ("invalid_request", 400)


def test_a_relative_src_path_is_the_hooks(
    daemon: Daemon, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = daemon.image_file(MIB, name="relative.img")
    monkeypatch.chdir(daemon.upload_dir)
    manager = OpenstackManager(None, **daemon.kwargs())
    image_id = manager.upload_image(config(app_name, Path("relative.img")))
    assert manager.get_latest_image_id("jammy", app_name, "x64") == image_id
    assert src.exists()


def test_skip_unchanged_returns_the_image_already_there(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(2 * MIB)
    first = manager.upload_image(config(app_name, src))
    assert manager.upload_image(config(app_name, src), skip_unchanged=True) == first
    assert [image["id"] for image in bed.images("charm", f"jammy-{app_name}-x64")] == [first]
    # Without it, the same bytes are a new revision. (The same call again would be
    # the same job: the library keys it by the request and the file's path, size
    # and mtime, for a hook that re-runs; touching the file makes it another call.)
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = manager.upload_image(config(app_name, src))
    assert second != first
    assert manager.get_latest_image_id("jammy", app_name, "x64") == second


def test_upload_to_several_clouds(bed: Bed, daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(2 * MIB)
    ids = manager.upload_image_to_clouds(config(app_name, src), ["charm", "admin"])
    assert sorted(ids) == ["admin", "charm"]
    for cloud, image_id in ids.items():
        assert manager.get_latest_image_id("jammy", app_name, "x64", cloud=cloud) == image_id
        [image] = bed.images(cloud, f"jammy-{app_name}-x64")
        assert (image["id"], image["checksum"]) == (image_id, md5(src))


def test_upload_to_an_unknown_cloud_among_several(daemon: Daemon, app_name: str) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(MIB)
    with pytest.raises(UploadImageError) as caught:
        manager.upload_image_to_clouds(config(app_name, src), ["charm", "nowhere"])
    assert "nowhere" in str(caught.value)


# --- jobs: timeout, get_job, a hook that dies --------------------------------------------


def test_a_timeout_leaves_the_job_running_and_the_same_call_follows_it(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    src = daemon.image_file(48 * MIB)
    started = time.monotonic()
    with pytest.raises(UploadImageError) as caught:
        manager.upload_image(config(app_name, src), timeout=0.3)
    assert time.monotonic() - started < 15
    assert caught.value.code == "timeout"
    job_id = caught.value.job_id
    assert job_id is not None
    job = manager.get_job(job_id)
    assert job.id == job_id
    assert job.raw["request"]["src_path"] == str(src)

    image_id = manager.upload_image(config(app_name, src))
    job = manager.get_job(job_id)
    assert (job.state, job.done, job.image_id) == ("succeeded", True, image_id)
    assert job.bytes_sent == job.bytes_total == src.stat().st_size
    assert [image["id"] for image in bed.images("charm", f"jammy-{app_name}-x64")] == [image_id]


def test_get_job_of_no_job_is_not_found(daemon: Daemon) -> None:
    manager = OpenstackManager(None, **daemon.kwargs())
    with pytest.raises(UploadImageError) as caught:
        manager.get_job("no-such-job")
    assert (caught.value.code, caught.value.status) == ("not_found", 404)


def test_a_hook_killed_during_upload_and_run_again_makes_one_image(
    bed: Bed, daemon: Daemon, app_name: str
) -> None:
    src = daemon.image_file(64 * MIB)
    hook = [
        sys.executable,
        str(Path(__file__).with_name("hook_upload.py")),
        daemon.url,
        str(daemon.token_file),
        app_name,
        str(src),
    ]
    first = subprocess.Popen(hook, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while daemon.status()["uploads_in_flight"] == 0:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()

    again = subprocess.run(hook, capture_output=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr.decode()
    image_id = again.stdout.decode().strip()
    images = bed.images("charm", f"jammy-{app_name}-x64")
    assert [(image["id"], image["status"]) for image in images] == [(image_id, "active")]
    assert images[0]["checksum"] == md5(src)


def test_a_failed_job_is_not_sticky(bed: Bed, start_daemon: DaemonFactory, app_name: str) -> None:
    capped = bed.document("charm", charm={"image_endpoint_override": bed.glance_capped_url})
    daemon = start_daemon(capped)
    src = daemon.image_file(bed.glance_capped_size + MIB)
    with pytest.raises(UploadImageError) as caught:
        OpenstackManager(capped, **daemon.kwargs()).upload_image(config(app_name, src))
    assert caught.value.code == "image_too_large"
    # The hook runs again once the cloud is fixed: the same call uploads anew.
    time.sleep(1.1)
    manager = OpenstackManager(bed.document("charm"), **daemon.kwargs())
    image_id = manager.upload_image(config(app_name, src))
    assert manager.get_latest_image_id("jammy", app_name, "x64") == image_id


# --- what the library logs ---------------------------------------------------------------


def test_debug_logs_say_what_is_called_and_hold_no_secret(
    bed: Bed, daemon: Daemon, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="charms.openstack_image_helper.v0.openstack_manager")
    document: Dict[str, Any] = bed.document("charm", "admin")
    manager = OpenstackManager(document, **daemon.kwargs())
    manager.get_latest_image_id("jammy", app_name, "x64")
    text = caplog.text
    assert "PUT /v1/clouds" in text
    assert "GET /v1/images/latest" in text
    secrets = [daemon.token] + [c["auth"]["password"] for c in document["clouds"].values()]
    for secret in secrets:
        assert secret not in text


def test_over_the_unix_socket_a_root_only_file_outside_every_upload_dir_is_handed_over_open(
    bed: Bed, start_daemon: DaemonFactory, app_name: str, tmp_path: Path
) -> None:
    daemon = start_daemon(bed.document("charm"), unix_socket=True)
    manager = OpenstackManager(bed.document("charm"), url=daemon.url, token=daemon.token)
    # Outside the daemon's upload_dirs, and 0600: by path the daemon refuses it.
    src = tmp_path / "built" / "image.img"
    src.parent.mkdir()
    src.write_bytes(os.urandom(MIB))
    src.chmod(0o600)
    result = manager.upload(config(app_name, src))
    [image] = bed.images("charm", f"jammy-{app_name}-x64")
    assert (image["id"], image["status"], image["checksum"]) == (result.id, "active", md5(src))
    # The hook runs again: the daemon knows the file by its identity, the same job.
    assert manager.upload(config(app_name, src)).id == result.id
    assert len(bed.images("charm", f"jammy-{app_name}-x64")) == 1
