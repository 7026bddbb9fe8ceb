"""The libraries' package: what the tests import, and what the wheel holds."""

import os
from pathlib import Path

import charms.openstack_image_helper.v0.openstack_manager as openstack_manager
import charms.openstack_image_helper.v0.testing as testing

SOURCE_LIB = Path(__file__).resolve().parents[1] / "lib"


def test_the_tests_import_the_library_they_mean_to() -> None:
    for module in (openstack_manager, testing):
        path = Path(str(module.__file__)).resolve()
        from_source = SOURCE_LIB in path.parents
        if os.environ.get("OSIH_CHARMLIB_FROM_WHEEL") == "1":
            assert not from_source, f"{module.__name__} came from the source tree: {path}"
            assert "site-packages" in path.parts
        else:
            assert from_source, path


def test_the_library_versions_are_the_charm_library_triple() -> None:
    for module in (openstack_manager, testing):
        assert len(module.LIBID) == 32
        assert (module.LIBAPI, module.LIBPATCH >= 1) == (0, True)
