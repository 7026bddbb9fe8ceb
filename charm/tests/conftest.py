"""Test harness: the real daemon binary against the real Keystone + Glance test bed.

The bed is `tests/openstack/up.sh`'s (`OSIH_BED_DIR`, default `<repo>/target/openstack-bed`).
Each daemon runs the binary (`OSIH_BINARY`, default `<repo>/target/debug/openstack-image-helper`)
with its own config, state dir, upload dir and port, as a charm's machine would.
"""

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypedDict

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("OSIH_BINARY", REPO / "target/debug/openstack-image-helper"))
BED_DIR = Path(os.environ.get("OSIH_BED_DIR", REPO / "target/openstack-bed"))


class Bed:
    """The running test bed: its clouds, and direct access to Keystone and Glance."""

    def __init__(self, directory: Path) -> None:
        settings_file = directory / "settings"
        if not settings_file.exists():
            pytest.fail(
                f"no OpenStack test bed at {directory}: start it with tests/openstack/up.sh "
                "(`make bed`), or point OSIH_BED_DIR at a running one"
            )
        settings = dict(
            line.split("=", 1) for line in settings_file.read_text().splitlines() if "=" in line
        )
        self.glance_url = f"http://127.0.0.1:{settings['glance_port']}"
        self.glance_capped_url = f"http://127.0.0.1:{settings['glance_capped_port']}"
        self.glance_capped_size = int(settings["glance_capped_size"])
        self.clouds: Dict[str, Any] = yaml.safe_load((directory / "clouds.yaml").read_text())[
            "clouds"
        ]
        # Tokens by cloud, with when they were fetched: the bed's may live 60 s only.
        self._tokens: Dict[str, Tuple[str, float]] = {}
        # Each cloud's project id, from its token.
        self._projects: Dict[str, str] = {}

    def document(self, *names: str, **overrides: Dict[str, Any]) -> Dict[str, Any]:
        """A clouds.yaml document (as parsed) with the bed's clouds `names`."""
        clouds = {name: json.loads(json.dumps(self.clouds[name])) for name in names}
        for name, extra in overrides.items():
            clouds[name].update(extra)
        return {"clouds": clouds}

    def token(self, cloud: str) -> str:
        """A project-scoped Keystone token of one of the bed's password clouds."""
        cached = self._tokens.get(cloud)
        if cached is None or time.monotonic() - cached[1] > 15:
            auth = self.clouds[cloud]["auth"]
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": auth["username"],
                                "password": auth["password"],
                                "domain": {"name": auth["user_domain_name"]},
                            }
                        },
                    },
                    "scope": {
                        "project": {
                            "name": auth["project_name"],
                            "domain": {"name": auth["project_domain_name"]},
                        }
                    },
                }
            }
            request = urllib.request.Request(
                auth["auth_url"].rstrip("/") + "/auth/tokens",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self._tokens[cloud] = (response.headers["X-Subject-Token"], time.monotonic())
                self._projects[cloud] = json.loads(response.read())["token"]["project"]["id"]
        return self._tokens[cloud][0]

    def glance(self, cloud: str, method: str, path: str) -> Any:
        """One call to Glance as `cloud`; the parsed JSON answer (None when empty)."""
        request = urllib.request.Request(
            self.glance_url + path,
            headers={"X-Auth-Token": self.token(cloud), "Accept": "application/json"},
            method=method,
        )
        for attempt in range(6):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    raw = response.read()
                return json.loads(raw) if raw else None
            except urllib.error.HTTPError as err:
                # The bed's Glance runs on sqlite: "database is locked" (500) while
                # other tests write. Only a call that is safe to repeat goes again.
                if err.code != 500 or method == "POST" or attempt == 5:
                    raise
            time.sleep(0.3)
        raise AssertionError("unreachable")

    def images(self, cloud: str, name: str) -> List[Dict[str, Any]]:
        """Every image (any status) named `name` in `cloud`'s project (an admin sees
        every project's images: the owner is asked for)."""
        self.token(cloud)
        query = f"name={name}&owner={self._projects[cloud]}&limit=100"
        return list(self.glance(cloud, "GET", f"/v2/images?{query}")["images"])


def next_second() -> None:
    """Waits past the current second. Glance gives `created_at` in whole seconds, and
    the daemon never prunes an image that may be newer than its new one: two
    revisions a test expects pruned in order must be created in different seconds."""
    time.sleep(1.1)


def md5_of(data: bytes) -> str:
    """The md5 of `data`, as Glance's `checksum` gives it (on Python 3.8 too)."""
    try:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    except TypeError:  # Python 3.8 has no usedforsecurity
        return hashlib.md5(data).hexdigest()  # noqa: S324 (a checksum)


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonKwargs(TypedDict):
    """`OpenstackManager(..., **daemon.kwargs())`."""

    url: str
    token_file: str


class _UnixConnection(http.client.HTTPConnection):
    """The harness's own HTTP over a unix socket (independent of the library's)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


class Daemon:
    """One `openstack-image-helper serve` process with its own config and directories."""

    def __init__(
        self,
        root: Path,
        clouds: Optional[Dict[str, Any]],
        unix_socket: bool = False,
        default_cloud: Optional[str] = None,
        extra_config: Optional[Dict[str, Any]] = None,
    ) -> None:
        if not BINARY.exists():
            pytest.fail(f"no daemon binary at {BINARY}: `cargo build` (make charmlib-test does)")
        self.root = root
        self.upload_dir = root / "images"
        self.upload_dir.mkdir(parents=True)
        self.state_dir = root / "state"
        self.token_file = self.state_dir / "api-token"
        self.clouds_yaml = root / "clouds" / "clouds.yaml"
        if clouds is not None:
            self.clouds_yaml.parent.mkdir()
            self.clouds_yaml.write_text(yaml.safe_dump(clouds))
        if unix_socket:
            self.listen = f"unix:{root / 'api.sock'}"
            self.url = self.listen
        else:
            port = free_port()
            self.listen = f"127.0.0.1:{port}"
            self.url = f"http://127.0.0.1:{port}"
        config = {
            "listen": self.listen,
            "clouds_yaml": str(self.clouds_yaml),
            "state_dir": str(self.state_dir),
            "api_token_file": str(self.token_file),
            "upload_dirs": [str(self.upload_dir)],
        }
        if default_cloud is not None:
            config["default_cloud"] = default_cloud
        config.update(extra_config or {})
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / "daemon.log"
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        """Run the binary and wait until `/v1/health` answers."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(BINARY), "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited at start:\n{self.log_tail()}")
            try:
                if self.request("GET", "/v1/health")["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.05)
                continue
            time.sleep(0.05)
        pytest.fail(f"the daemon did not answer /v1/health:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, and wait for the exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self) -> str:
        """The last lines of the daemon's log, for failure messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    @property
    def token(self) -> str:
        """The API token the daemon created."""
        return self.token_file.read_text().strip()

    def kwargs(self) -> "DaemonKwargs":
        """The `OpenstackManager` keyword arguments that reach this daemon."""
        return {"url": self.url, "token_file": str(self.token_file)}

    def request(self, method: str, path: str) -> Any:
        """One call to the daemon's API, outside the library (to check what it did)."""
        headers = {} if path == "/v1/health" else {"Authorization": f"Bearer {self.token}"}
        if self.url.startswith("unix:"):
            conn: http.client.HTTPConnection = _UnixConnection(self.url[len("unix:") :])
        else:
            conn = http.client.HTTPConnection(self.url[len("http://") :], timeout=30)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            raise AssertionError(f"{method} {path}: HTTP {response.status} {body!r}")
        return json.loads(body)

    def status(self) -> Dict[str, Any]:
        """`GET /v1/status`."""
        return dict(self.request("GET", "/v1/status"))

    def image_file(self, size: int, name: str = "image.img") -> Path:
        """A file of `size` random bytes (a raw image) in the upload dir."""
        path = self.upload_dir / name
        with open(path, "wb") as file:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                file.write(chunk)
                left -= len(chunk)
        return path


@pytest.fixture(scope="session")
def bed() -> Bed:
    """The running test bed."""
    return Bed(BED_DIR)


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start daemons of this test's own; all are stopped at its end."""
    started: List[Daemon] = []

    def start(clouds: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Daemon:
        daemon = Daemon(tmp_path / f"daemon{len(started)}", clouds, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def daemon(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The daemon most tests share: the bed's `charm` (default) and `admin` clouds."""
    shared = Daemon(
        tmp_path_factory.mktemp("shared"),
        bed.document("charm", "admin"),
        default_cloud="charm",
    )
    yield shared
    shared.stop()


_APP_NAMES: List[str] = []


@pytest.fixture
def app_name() -> str:
    """A unique Juju application name, so tests on a shared bed never meet."""
    name = f"charmlib-t{uuid.uuid4().hex[:12]}"
    _APP_NAMES.append(name)
    return name


@pytest.fixture(scope="session", autouse=True)
def tidy_up_images() -> Iterator[None]:
    """At the end, delete the images of every test's names (the bed is long-lived).

    Tests that need no bed (the fake, the relation library, COS) run without one.
    """
    yield
    if not _APP_NAMES:
        return
    bed = Bed(BED_DIR)
    names = ",".join(f'"jammy-{name}-x64"' for name in _APP_NAMES)
    for cloud in ("charm", "admin") if names else ():
        found = bed.glance(cloud, "GET", f"/v2/images?name=in:{names}&limit=1000")["images"]
        for image in found:
            with contextlib.suppress(urllib.error.HTTPError):
                bed.glance(cloud, "DELETE", f"/v2/images/{image['id']}")
