"""Check that the charm libraries are Python 3.8 (focal charms): their syntax, and import.

The syntax check (`ast.parse` with `feature_version=(3, 8)`) runs on every library file.
When a Python 3.8 interpreter is at hand (`python3.8`, or pyenv's), the libraries that
need only the standard library are also imported under it, which catches what the
parser cannot (a subscripted builtin evaluated at import time, a module that 3.8
lacks). `image_info` needs ops, which the check's 3.8 does not have: parsed only.
"""

import ast
import glob
import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parent / "lib"
PACKAGE = "charms.openstack_image_helper.v0"
SOURCES = sorted((LIB / "charms/openstack_image_helper/v0").glob("*.py"))
# The libraries that need only the standard library: imported under 3.8.
STDLIB_ONLY = ("openstack_manager", "testing")


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
    for source in SOURCES:
        ast.parse(source.read_text(), filename=str(source), feature_version=(3, 8))
        print(f"{source.name}: parses as Python 3.8")
    interpreter = python38()
    if interpreter is None:
        print("no Python 3.8 interpreter here: the import under 3.8 was not tried")
        return 0
    imports = "; ".join(f"import {PACKAGE}.{name}" for name in STDLIB_ONLY)
    env = {**os.environ, "PYTHONPATH": str(LIB)}
    result = subprocess.run([interpreter, "-c", imports], env=env, check=False)
    if result.returncode == 0:
        print(f"{', '.join(STDLIB_ONLY)}: import under {interpreter}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
