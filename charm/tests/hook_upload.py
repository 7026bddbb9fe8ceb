"""A charm hook's upload, as its own process, so that a test can SIGKILL it midway.

Usage: python hook_upload.py URL TOKEN_FILE APP_NAME SRC_PATH
Prints the image id on success; the library's debug log goes to stderr.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from charms.openstack_image_helper.v0.openstack_manager import (
    OpenstackManager,
    UploadImageConfig,
)


def main() -> None:
    """Upload as a hook would: build a manager (no clouds: the daemon's), upload, print."""
    url, token_file, app_name, src_path = sys.argv[1:5]
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    manager = OpenstackManager(None, url=url, token_file=token_file)
    image_id = manager.upload_image(
        UploadImageConfig(
            arch="x64", app_name=app_name, base="jammy", num_revisions=2, src_path=src_path
        )
    )
    print(image_id, flush=True)


if __name__ == "__main__":
    main()
