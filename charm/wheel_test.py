"""Run the library tests from the installed wheel, on the oldest and newest Python here.

The interpreters are Debian's (`/usr/bin/python3.X`) and pyenv's (`~/.pyenv/versions`),
3.8 or newer. Each gets a venv under `target/charm-wheel-venv-3.X` with the wheel of
`target/charm-wheel/` and `requirements-wheel-test.txt`, and runs pytest with the
source tree's `lib` kept off the path (`OSIH_CHARMLIB_FROM_WHEEL=1` makes the tests
check that they import the installed package). It prints which versions it used and
says so loudly when only one version is at hand.
"""

import glob
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

CHARM = Path(__file__).resolve().parent
TARGET = CHARM.parent / "target"


def interpreters() -> Dict[Tuple[int, int], str]:
    """Python 3.8+ interpreters on this machine, by version."""
    candidates = glob.glob("/usr/bin/python3.*") + glob.glob(
        os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")
    )
    found: Dict[Tuple[int, int], str] = {}
    for candidate in sorted(candidates):
        if not re.search(r"python3(\.\d+)?$", candidate):
            continue
        out = subprocess.run(
            [candidate, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            major, minor = (int(n) for n in out.stdout.split())
            if (major, minor) >= (3, 8):
                found.setdefault((major, minor), candidate)
    return found


def run(*args: str, env: "Dict[str, str] | None" = None, check: bool = True) -> int:
    """Run a command, echoing it; stop at its failure when `check`; its exit code."""
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, check=check, env=env).returncode


def main(pytest_args: List[str]) -> int:
    """Test the wheel on the oldest and newest interpreters (or CHARMLIB_WHEEL_PYTHONS)."""
    [wheel] = glob.glob(str(TARGET / "charm-wheel/*.whl"))
    found = interpreters()
    versions = sorted(found)
    chosen = sorted({versions[0], versions[-1]})
    only = os.environ.get("CHARMLIB_WHEEL_PYTHONS")  # "3.13", or "3.8 3.13": these only
    if only:
        chosen = [v for v in versions if f"{v[0]}.{v[1]}" in only.split()]
    print(f"Pythons here: {[f'{a}.{b}' for a, b in versions]}; testing the wheel on", end=" ")
    print(", ".join(f"{a}.{b} ({found[(a, b)]})" for a, b in chosen))
    if len(chosen) < 2:
        print("*** only one Python version is at hand: the wheel is tested on it alone ***")
    failed = []
    for major, minor in chosen:
        venv = TARGET / f"charm-wheel-venv-{major}.{minor}"
        if not (venv / "bin/python").exists():
            run(found[(major, minor)], "-m", "venv", str(venv))
        pip = [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
        ]
        run(*pip, "-r", str(CHARM / "requirements-wheel-test.txt"))
        run(*pip, "--force-reinstall", "--no-deps", wheel)
        env = {**os.environ, "OSIH_CHARMLIB_FROM_WHEEL": "1"}
        # `-o pythonpath=`: the source tree's lib stays off the path.
        code = run(
            str(venv / "bin/python"),
            "-m",
            "pytest",
            "-o",
            "pythonpath=",
            "-p",
            "no:cacheprovider",
            *pytest_args,
            env=env,
            check=False,
        )
        if code:
            failed.append(f"{major}.{minor}")
    # Every version runs, whatever the one before did; then the verdict.
    print(f"wheel tests failed on Python {', '.join(failed)}" if failed else "wheel tests passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
