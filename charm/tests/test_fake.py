"""`FakeOpenstackManager`: the real library's surface and errors, in memory."""

import inspect
from pathlib import Path
from typing import Any, Dict

import pytest

from charms.openstack_image_helper.v0.openstack_manager import (
    CODE_DAEMON_UNREACHABLE,
    CODE_OPENSTACK_UNAUTHORIZED,
    CODE_TOO_MANY_UPLOADS,
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
from charms.openstack_image_helper.v0.testing import FakeDaemon, FakeOpenstackManager
from conftest import md5_of

CLOUDS: Dict[str, Any] = {"clouds": {"zeta": {"auth": {}}, "alpha": {"auth": {}}}}


@pytest.fixture
def fake() -> FakeDaemon:
    return FakeOpenstackManager.reset()


def image(tmp_path: Path, data: bytes = b"an image", name: str = "image.img") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def config(src: Path, num_revisions: int = 2) -> UploadImageConfig:
    return UploadImageConfig("x64", "my-app", "jammy", num_revisions, src)


def test_the_fake_has_every_public_method_with_the_same_parameters() -> None:
    for name, real in inspect.getmembers(OpenstackManager, callable):
        if name.startswith("_") and name not in ("__init__", "__enter__", "__exit__"):
            continue
        faked = getattr(FakeOpenstackManager, name, None)
        assert faked is not None, name
        real_params = list(inspect.signature(real).parameters)
        fake_params = list(inspect.signature(faked).parameters)
        # `**kwargs` in the fake stands for the keyword arguments it ignores or passes on.
        assert fake_params[: len(real_params)] == real_params or "kwargs" in fake_params, name


def test_uploads_prune_and_latest_follows(fake: FakeDaemon, tmp_path: Path) -> None:
    manager = FakeOpenstackManager(CLOUDS)
    assert (manager.default_cloud, manager.clouds) == ("zeta", ["zeta", "alpha"])
    ids = [manager.upload_image(config(image(tmp_path, bytes([n])), 2)) for n in range(3)]
    assert ids == ["fake-image-0001", "fake-image-0002", "fake-image-0003"]
    assert [i.id for i in fake.images_named("zeta", "jammy-my-app-x64")] == ids[1:]
    assert manager.get_latest_image_id("jammy", "my-app", "x64") == ids[2]
    assert manager.get_latest_image_id("jammy", "my-app", "x64", cloud="alpha") is None


def test_upload_result_and_skip_unchanged(fake: FakeDaemon, tmp_path: Path) -> None:
    manager = FakeOpenstackManager(CLOUDS)
    src = image(tmp_path)
    first = manager.upload(config(src), cloud="alpha")
    assert (first.name, first.cloud, first.size, first.attempts) == (
        "jammy-my-app-x64",
        "alpha",
        8,
        1,
    )
    assert first.checksum == md5_of(b"an image")
    again = manager.upload(config(src), cloud="alpha", skip_unchanged=True)
    assert (again.id, again.unchanged) == (first.id, True)
    assert fake.calls[-1][1]["skip_unchanged"] is True


def test_start_upload_is_queued_then_done(fake: FakeDaemon, tmp_path: Path) -> None:
    manager = FakeOpenstackManager(CLOUDS)
    job = manager.start_upload(config(image(tmp_path)))
    assert (job.state, job.progress) == ("queued", 0.0)
    assert job.refresh().state == "succeeded"
    assert job.wait().id == job.image_id == manager.get_job(job.id).image_id
    assert manager.status().jobs["succeeded"] == 1


def test_injected_errors_are_the_real_librarys(fake: FakeDaemon, tmp_path: Path) -> None:
    manager = FakeOpenstackManager(CLOUDS)
    fake.fail("upload", CODE_TOO_MANY_UPLOADS, retry_after=30)
    with pytest.raises(TransientError) as full:
        manager.upload(config(image(tmp_path)))
    assert isinstance(full.value, UploadImageError)
    assert (full.value.code, full.value.retry_after) == (CODE_TOO_MANY_UPLOADS, 30)
    # Once only: the next upload succeeds.
    assert manager.upload(config(image(tmp_path))).id == "fake-image-0001"

    fake.fail("latest", CODE_DAEMON_UNREACHABLE)
    with pytest.raises(GetImageError) as gone:
        manager.get_latest_image_id("jammy", "my-app", "x64")
    assert isinstance(gone.value, DaemonUnreachableError)
    assert isinstance(gone.value, OpenstackConnectionError)

    fake.fail("clouds", CODE_OPENSTACK_UNAUTHORIZED)
    with pytest.raises(CredentialsError) as refused:
        FakeOpenstackManager(CLOUDS)
    assert isinstance(refused.value, UnauthorizedError)
    assert isinstance(refused.value, PermanentError)


def test_bad_requests_fail_as_the_daemon_would(fake: FakeDaemon, tmp_path: Path) -> None:
    manager = FakeOpenstackManager(CLOUDS)
    with pytest.raises(UploadImageError) as missing:
        manager.upload(config(tmp_path / "missing.img"))
    assert missing.value.code == "file_not_found"
    with pytest.raises(UploadImageError) as bad:
        manager.upload(UploadImageConfig("sparc", "my-app", "jammy", 1, image(tmp_path)))
    assert (bad.value.code, bad.value.status) == ("invalid_request", 400)
    with pytest.raises(UploadImageError) as cloud:
        manager.upload(config(image(tmp_path)), cloud="nowhere")
    assert cloud.value.code == "unknown_cloud"
    fake.upload_dirs = [str(tmp_path / "allowed")]
    with pytest.raises(UploadImageError) as outside:
        manager.upload(config(image(tmp_path)))
    assert outside.value.code == "path_not_allowed"


def test_secret_content_and_versions(fake: FakeDaemon) -> None:
    text = "clouds:\n  zeta:\n    auth: {}\n  'alpha':\n    auth:\n      password: x\n"
    manager = FakeOpenstackManager.from_secret_content({"clouds-yaml": text})
    assert (manager.default_cloud, manager.clouds) == ("zeta", ["zeta", "alpha"])
    with pytest.raises(UnauthorizedError):
        FakeOpenstackManager.from_secret_content({})
    manager.require_daemon("0.3.0", "anything")
    fake.version = None
    with pytest.raises(DaemonTooOldError):
        manager.require_daemon("0.3.0", "descriptor uploads")
