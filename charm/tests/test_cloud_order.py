"""The library's default cloud is the first cloud of the charm's document, in its order."""

from typing import Any, Dict

from charms.openstack_image_helper.v0.openstack_manager import OpenstackManager, UploadImageConfig
from conftest import Bed, DaemonFactory

MIB = 1 << 20


def zeta_then_alpha(bed: Bed) -> Dict[str, Any]:
    """`zeta` (the bed's `charm` project) first, `alpha` (the `admin` project) second.

    Alphabetically `alpha` comes first: a library that sorted the document would
    upload to the admin project.
    """
    document = bed.document("charm", "admin")
    return {"clouds": {"zeta": document["clouds"]["charm"], "alpha": document["clouds"]["admin"]}}


def test_an_upload_lands_in_the_documents_first_cloud(
    bed: Bed, start_daemon: DaemonFactory, app_name: str
) -> None:
    daemon = start_daemon(None)
    manager = OpenstackManager(zeta_then_alpha(bed), **daemon.kwargs())
    assert manager.default_cloud == "zeta"
    src = daemon.image_file(MIB + 3)
    config = UploadImageConfig(
        arch="x64", app_name=app_name, base="jammy", num_revisions=2, src_path=src
    )
    image_id = manager.upload_image(config)

    # The daemon's answer: the job went to zeta, asked for by name.
    [job] = daemon.request("GET", "/v1/jobs")["jobs"]
    assert job["request"]["cloud"] == "zeta"
    assert job["result"]["cloud"] == "zeta"
    assert job["image_id"] == image_id
    # Glance: the image is in zeta's project (the bed's `charm`), none in alpha's.
    name = f"jammy-{app_name}-x64"
    assert [image["id"] for image in bed.images("charm", name)] == [image_id]
    assert bed.images("admin", name) == []
    # `latest` asks the same cloud.
    assert manager.get_latest_image_id("jammy", app_name, "x64") == image_id
    assert manager.get_latest_image_id("jammy", app_name, "x64", cloud="alpha") is None


def test_a_manager_without_a_document_leaves_the_choice_to_the_daemon(
    bed: Bed, start_daemon: DaemonFactory
) -> None:
    daemon = start_daemon(bed.document("charm"))
    assert OpenstackManager(None, **daemon.kwargs()).default_cloud is None
