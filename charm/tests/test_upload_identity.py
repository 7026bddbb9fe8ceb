"""The upload's identity: what makes a re-run hook's call the same job, and what does not.

No daemon here: these are the library's own decisions (the key it sends, and how it
reads the daemon's times), checked on real files.
"""

import os
import re
from pathlib import Path
from typing import Any, Dict

import charms.openstack_image_helper.v0.openstack_manager as openstack_manager
from charms.openstack_image_helper.v0.openstack_manager import OpenstackManager, UploadImageConfig

KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def body(src: Path, num_revisions: int = 2) -> Dict[str, Any]:
    config = UploadImageConfig("x64", "app", "jammy", num_revisions, src)
    return OpenstackManager._upload_body(config, skip_unchanged=False)


def test_the_same_call_on_the_same_file_has_the_same_key(tmp_path: Path) -> None:
    src = tmp_path / "image.img"
    src.write_bytes(b"a" * 4096)
    key = openstack_manager._idempotency_key(body(src), 0)
    assert key is not None
    assert KEY.match(key), key
    assert openstack_manager._idempotency_key(body(src), 0) == key


def test_a_changed_file_request_or_attempt_has_another_key(tmp_path: Path) -> None:
    src = tmp_path / "image.img"
    src.write_bytes(b"a" * 4096)
    key = openstack_manager._idempotency_key(body(src), 0)
    assert openstack_manager._idempotency_key(body(src), 1) != key
    assert openstack_manager._idempotency_key(body(src, num_revisions=3), 0) != key
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert openstack_manager._idempotency_key(body(src), 0) != key
    renamed = tmp_path / "other.img"
    src.rename(renamed)
    assert openstack_manager._idempotency_key(body(renamed), 0) != key


def test_no_key_for_a_file_that_cannot_be_seen(tmp_path: Path) -> None:
    assert openstack_manager._idempotency_key(body(tmp_path / "missing.img"), 0) is None


def test_the_daemons_times_are_read_as_rfc3339() -> None:
    read = openstack_manager._timestamp
    assert read("1970-01-01T00:00:10Z") == 10.0
    assert read("1970-01-01T00:00:10.250000Z") == 10.25
    assert read("1970-01-01T01:00:10+01:00") == 10.0
    assert read("1970-01-01T00:00:10.123456789Z") is not None
    assert read("yesterday") is None
    assert read(None) is None
