"""Check that the charm library is Python 3.8 (focal charms): its syntax, and its import.

The syntax check (`ast.parse` with `feature_version=(3, 8)`) runs everywhere. When a
Python 3.8 interpreter is at hand (`python3.8`, or pyenv's), the library is also imported
under it, which catches what the parser cannot (a subscripted builtin evaluated at
import time, a module that 3.8 lacks).
"""

import ast
import glob
import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent / "lib"
MODULE = "charms.openstack_image_helper.v0.openstack_manager"
SOURCE = LIB / "charms/openstack_image_helper/v0/openstack_manager.py"


def python38() -> "str | None":
    """A working Python 3.8 interpreter, if there is one."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    candidates = ["python3.8", *pyenv]
    for candidate in candidates:
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return candidate
    return None


def main() -> int:
    """Run the checks; 0 when they pass."""
    ast.parse(SOURCE.read_text(), filename=str(SOURCE), feature_version=(3, 8))
    print(f"{SOURCE.name}: parses as Python 3.8")
    interpreter = python38()
    if interpreter is None:
        print("no Python 3.8 interpreter here: the import under 3.8 was not tried")
        return 0
    code = f"import {MODULE} as m; print(m.LIBAPI, m.LIBPATCH)"
    env = {**os.environ, "PYTHONPATH": str(LIB)}
    result = subprocess.run([interpreter, "-c", code], env=env, check=False)
    if result.returncode == 0:
        print(f"{SOURCE.name}: imports under {interpreter}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
