"""COS: the alert rules, the dashboard and the Loki rules, with the real tools.

`promtool` (Debian's `prometheus` package) checks and unit-tests the rules and checks
every expression of the dashboard; a real Prometheus scrapes a running daemon's
/metrics, authorised with the API token as README.md tells an operator, and one of
the rules fires over what it scraped. No test is skipped: without promtool they fail.
"""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
import yaml

from charms.openstack_image_helper.v0.openstack_manager import (
    OpenstackManager,
    UploadImageConfig,
    UploadImageError,
)
from conftest import Bed, DaemonFactory, free_port

CHARM = Path(__file__).resolve().parents[1]
REPO = CHARM.parent
COS = CHARM / "cos"
ALERT_RULES = sorted((COS / "prometheus_alert_rules").glob("*.rules"))
LOKI_RULES = sorted((COS / "loki_alert_rules").glob("*.rules"))
DASHBOARDS = sorted((COS / "grafana_dashboards").glob("*.json"))
# Series the rules may use before the daemon exports them (the lead adds them in 0.3).
PENDING_SERIES = {"openstack_image_helper_upload_retries_total"}


def tool(name: str) -> str:
    """The path of a tool of Debian's `prometheus` package; the test fails without it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: apt-get install prometheus (CI's .ci/run does)")
    return found


def run(*args: str) -> str:
    """Run a tool; its output, or the test fails with it."""
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dashboard_exprs() -> Dict[str, str]:
    """Every PromQL expression of the dashboards, with Grafana's variables filled in."""
    exprs = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "5m")
                expr = expr.replace("$__range", "1h").replace("$cloud", ".*")
                assert "$" not in expr, f"{path.name} {panel['title']}: unknown variable"
                exprs[f"{path.stem}:{panel['id']}:{target['refId']}"] = expr
    return exprs


def documented_series() -> Set[str]:
    """The series of README.md's Metrics table (without the prefix's repetition)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n### ", 1)[0]
    names = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert names, "README.md's Metrics table was not found"
    return {f"openstack_image_helper_{name}" for name in names}


def used_series(text: str) -> Set[str]:
    """The daemon's series an expression uses (histogram suffixes removed)."""
    names = set(re.findall(r"openstack_image_helper_[a-z_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def test_promtool_checks_the_alert_rules() -> None:
    assert ALERT_RULES
    out = run(tool("promtool"), "check", "rules", *map(str, ALERT_RULES))
    assert out.count("SUCCESS") == len(ALERT_RULES)


def test_promtool_unit_tests_every_alert() -> None:
    test_file = Path(__file__).parent / "cos/alerts_test.yaml"
    out = run(tool("promtool"), "test", "rules", str(test_file))
    assert "SUCCESS" in out
    tested = {
        case["alertname"]
        for test in yaml.safe_load(test_file.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    alerts = {
        rule["alert"]
        for path in ALERT_RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    assert tested == alerts


def test_promtool_checks_every_dashboard_expression(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    titles = " ".join(
        panel["title"].lower()
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    )
    for topic in ("uploads", "bytes", "latest", "glance calls", "logins", "jobs"):
        assert topic in titles
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": "dashboard:" + name.replace("-", "_").replace(":", "_"), "expr": e}
                    for name, e in exprs.items()
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules"
    path.write_text(yaml.safe_dump(rules))
    out = run(tool("promtool"), "check", "rules", str(path))
    assert f"SUCCESS: {len(exprs)} rules found" in out


def test_rules_and_dashboards_use_only_the_daemons_series() -> None:
    known = documented_series() | PENDING_SERIES
    for path in [*ALERT_RULES, *DASHBOARDS]:
        unknown = used_series(path.read_text()) - known
        assert not unknown, f"{path.name} uses series README.md does not list: {unknown}"


def test_the_dashboard_is_for_cos() -> None:
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        assert variables == {"prometheusds", "cloud"}
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${prometheusds}"


def loki_rules() -> List[Dict[str, Any]]:
    return [
        rule
        for path in LOKI_RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_the_loki_rule_matches_the_daemons_error_lines_only() -> None:
    # No Loki in Debian: the rule's structure and its line filter are checked here.
    [rule] = loki_rules()
    assert rule["alert"] == "OpenstackImageHelperErrorLogged"
    assert rule["labels"]["severity"] == "warning"
    expr = rule["expr"]
    assert "{%%juju_topology%%}" in expr
    [pattern] = re.findall(r'\|~ "((?:[^"\\]|\\.)*)"', expr)
    line_filter = re.compile(json.loads(f'"{pattern}"'))
    errors = [
        "2026-12-06T04:18:35.416518Z ERROR openstack_image_helper::jobs: upload failed cloud=a",
        '{"timestamp":"2026-12-06T04:18:35Z","level":"ERROR","fields":{"message":"x"}}',
    ]
    others = [
        "2026-12-06T04:18:35.416518Z  INFO openstack_image_helper::daemon: serving",
        "2026-12-06T04:18:35.416518Z  WARN openstack_image_helper::jobs: ERRORS_SEEN=0",
        '{"timestamp":"2026-12-06T04:18:35Z","level":"INFO","fields":{"message":"ERROR"}}',
    ]
    assert [bool(line_filter.search(line)) for line in errors + others] == [True] * 2 + [False] * 3


# --- a real Prometheus ----------------------------------------------------------------


class Prometheus:
    """`prometheus` on a loopback port, with a temp config and data dir."""

    def __init__(self, root: Path, target: str, token_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir()
        rules = root / "rules"
        rules.mkdir()
        for path in ALERT_RULES:
            shutil.copy(path, rules / path.name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules / "*.rules")],
            "scrape_configs": [
                {
                    # As cos_agent names it: <app>_<n>_<job_name>.
                    "job_name": "builder_0_openstack-image-helper",
                    "metrics_path": "/metrics",
                    # README.md: "give the scrape job an authorization with the API token".
                    "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **query: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, what: str, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                last = check()
            except OSError:
                last = None
            if last:
                return last
            time.sleep(0.5)
        pytest.fail(f"Prometheus: no {what} in {timeout} s (last: {last})")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: List[Prometheus] = []

    def start(target: str, token_file: Path) -> Prometheus:
        server = Prometheus(tmp_path / f"prometheus{len(started)}", target, token_file)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_the_daemon_and_an_alert_fires(
    bed: Bed, start_daemon: DaemonFactory, prometheus_for: Any, app_name: str
) -> None:
    # A cloud whose Glance refuses images over a size: an upload that fails.
    capped = bed.document("charm", charm={"image_endpoint_override": bed.glance_capped_url})
    daemon = start_daemon(capped)
    server = prometheus_for(daemon.url[len("http://") :], daemon.token_file)
    # The scrape is authorised: the target is up, the daemon's series are there.
    server.wait_for(
        "healthy target",
        lambda: [
            t
            for t in server.api("targets")["activeTargets"]
            if t["health"] == "up" and t["labels"]["job"] == "builder_0_openstack-image-helper"
        ],
    )
    [info] = server.wait_for(
        "build_info",
        lambda: server.api("query", query="openstack_image_helper_build_info")["result"],
    )
    assert info["metric"]["version"] == daemon.status()["version"]

    manager = OpenstackManager(capped, **daemon.kwargs())
    src = daemon.image_file(bed.glance_capped_size + (1 << 20))
    with pytest.raises(UploadImageError):
        manager.upload(UploadImageConfig("x64", app_name, "jammy", 1, src))
    # The rule evaluates over the scraped series: the alert fires for the cloud.
    alerts = server.wait_for(
        "firing OpenstackImageHelperUploadsFailing",
        lambda: [
            a
            for a in server.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "OpenstackImageHelperUploadsFailing"
            and a["state"] == "firing"
        ],
    )
    assert alerts[0]["labels"]["cloud"] == "charm"
    # Every rule evaluated without an error over the real series.
    groups = server.api("rules")["groups"]
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}
