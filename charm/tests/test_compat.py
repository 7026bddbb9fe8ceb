"""Compatibility: a charm that used the old `openstack_manager` module, after the import change.

The charm's own enums stand in as `BaseImage` and `Arch`; the calls are the old callers'
(positional and keyword arguments as the old signatures name them, the `with` block, the
old `except` clauses), and the daemon is found from the environment, as a charm's would.
"""

import dataclasses
import enum
import inspect
from pathlib import Path

import pytest

# The one line a charm changes: `import openstack_manager` became this.
import charms.openstack_image_helper.v0.openstack_manager as openstack_manager
from charms.openstack_image_helper.v0.openstack_manager import (
    IMAGE_NAME_TMPL,
    GetImageError,
    OpenstackConnectionError,
    OpenstackManager,
    UnauthorizedError,
    UploadImageConfig,
    UploadImageError,
)
from conftest import Bed, Daemon


class BaseImage(str, enum.Enum):
    """The charm's stand-in base enum."""

    FOCAL = "focal"
    JAMMY = "jammy"
    NOBLE = "noble"


class Arch(enum.Enum):
    """The charm's stand-in architecture enum (a plain Enum, not a str one)."""

    ARM64 = "arm64"
    X64 = "x64"


@pytest.fixture
def charm_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """The machine's environment points at the daemon; the charm passes only its clouds."""
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_URL", daemon.url)
    monkeypatch.setenv("OPENSTACK_IMAGE_HELPER_TOKEN_FILE", str(daemon.token_file))
    return daemon


def test_the_old_names_and_signatures() -> None:
    for name in (
        "IMAGE_NAME_TMPL",
        "OpenstackManager",
        "UploadImageConfig",
        "UnauthorizedError",
        "GetImageError",
        "UploadImageError",
        "OpenstackConnectionError",
    ):
        assert name in openstack_manager.__all__
    for error in (UnauthorizedError, GetImageError, UploadImageError, OpenstackConnectionError):
        assert issubclass(error, Exception)
        assert str(error("Unauthorized credentials.")) == "Unauthorized credentials."
    assert [f.name for f in dataclasses.fields(UploadImageConfig)] == [
        "arch",
        "app_name",
        "base",
        "num_revisions",
        "src_path",
    ]

    def positional(function: object) -> list:  # type: ignore[type-arg]
        parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
        return [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]

    assert positional(OpenstackManager.__init__) == ["self", "cloud_config"]
    assert positional(OpenstackManager.get_latest_image_id) == [
        "self",
        "image_base",
        "app_name",
        "arch",
    ]
    assert positional(OpenstackManager.upload_image) == ["self", "config"]
    name = IMAGE_NAME_TMPL.format(IMAGE_BASE="jammy", APP_NAME="app", ARCH="x64")
    assert name == "jammy-app-x64"


def test_an_old_charm_uploads_and_queries_as_before(
    bed: Bed, charm_env: Daemon, app_name: str
) -> None:
    cloud_config = bed.document("charm", "admin")
    src = charm_env.image_file(1 << 20, name="compat.img")
    with OpenstackManager(cloud_config=cloud_config) as manager:
        assert (
            manager.get_latest_image_id(
                image_base=BaseImage.JAMMY, app_name=app_name, arch=Arch.X64
            )
            is None
        )
        image_id = manager.upload_image(
            config=UploadImageConfig(
                arch=Arch.X64,
                app_name=app_name,
                base=BaseImage.JAMMY,
                num_revisions=2,
                src_path=Path(src),
            )
        )
        assert manager.get_latest_image_id(BaseImage.JAMMY, app_name, Arch.X64) == image_id
        # Positional, as the dataclass allows.
        second = manager.upload_image(
            UploadImageConfig(Arch.X64, app_name, BaseImage.JAMMY, 2, src)
        )
        assert manager.get_latest_image_id(BaseImage.JAMMY, app_name, Arch.X64) == second
    # The name is the template's, as the old module made it.
    name = IMAGE_NAME_TMPL.format(
        IMAGE_BASE=BaseImage.JAMMY.value, APP_NAME=app_name, ARCH=Arch.X64.value
    )
    assert {image["id"] for image in bed.images("charm", name)} == {image_id, second}


def test_an_old_charms_except_clauses_still_catch(
    bed: Bed, charm_env: Daemon, app_name: str, tmp_path: Path
) -> None:
    wrong = bed.document("charm")
    wrong["clouds"]["charm"]["auth"]["password"] = "wrong"
    try:
        OpenstackManager(wrong)
        pytest.fail("bad credentials were taken")
    except openstack_manager.UnauthorizedError as exc:
        assert "charm" in str(exc)

    manager = OpenstackManager(bed.document("charm", "admin"))
    try:
        manager.get_latest_image_id(BaseImage.JAMMY, app_name, "sparc")
        pytest.fail("a bad arch was taken")
    except openstack_manager.GetImageError as exc:
        assert "sparc" in str(exc)

    outside = tmp_path / "outside.img"
    outside.write_bytes(b"x" * 512)
    try:
        manager.upload_image(UploadImageConfig(Arch.X64, app_name, BaseImage.JAMMY, 1, outside))
        pytest.fail("a file outside upload_dirs was taken")
    except openstack_manager.UploadImageError as exc:
        assert "path_not_allowed" in str(exc)
