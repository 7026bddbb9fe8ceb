"""The example charm with ops' Scenario (`ops.testing`) and `FakeOpenstackManager`.

cos_agent is a `charm-libs` dependency that charmcraft fetches at pack time: it is
not in this repository, so its import is stubbed here (`COSAgentProvider` records
what the charm passes it).
"""

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Tuple

import pytest

if sys.version_info < (3, 10):
    pytest.skip("ops 3 (ops[testing]) needs Python 3.10", allow_module_level=True)

import ops
from ops import testing

EXAMPLE = Path(__file__).resolve().parents[2]


class StubCOSAgentProvider(ops.Object):
    """What the charm gives cos_agent's `COSAgentProvider`."""

    seen: ClassVar[List[Dict[str, Any]]] = []

    def __init__(self, charm: ops.CharmBase, **kwargs: Any) -> None:
        super().__init__(charm, kwargs.get("relation_name", "cos-agent"))
        StubCOSAgentProvider.seen.append(kwargs)


def _stub_cos_agent() -> None:
    module = types.ModuleType("charms.grafana_agent.v0.cos_agent")
    module.COSAgentProvider = StubCOSAgentProvider  # type: ignore[attr-defined]
    for name in ("charms.grafana_agent", "charms.grafana_agent.v0"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["charms.grafana_agent.v0.cos_agent"] = module


_stub_cos_agent()
sys.path[:0] = [str(EXAMPLE / "src"), str(EXAMPLE / "lib")]

import charm

from charms.openstack_image_helper.v0.openstack_manager import (
    CODE_OPENSTACK_UNAUTHORIZED,
    CODE_TOO_MANY_UPLOADS,
)
from charms.openstack_image_helper.v0.testing import (
    FakeDaemon,
    FakeOpenstackManager,
)

ZETA_ALPHA = "clouds:\n  zeta:\n    auth: {password: one}\n  alpha:\n    auth: {password: two}\n"
ALPHA_ONLY = "clouds:\n  alpha:\n    auth: {password: three}\n"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    monkeypatch.setattr(charm, "OpenstackManager", FakeOpenstackManager)
    return FakeOpenstackManager.reset()


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> List[Tuple[str, ...]]:
    """The machine's paths under tmp_path, and the commands the charm ran."""
    commands: List[Tuple[str, ...]] = []
    monkeypatch.setattr(charm, "run", lambda *args: commands.append(args))
    monkeypatch.setattr(charm, "CONFIG_PATH", tmp_path / "etc/config.d/50-charm.yaml")
    monkeypatch.setattr(charm, "IMAGES_DIR", tmp_path / "images")
    monkeypatch.setattr(charm, "TOKEN_FILE", tmp_path / "api-token")
    monkeypatch.setattr(charm, "SCRAPE_TOKEN_FILE", tmp_path / "agent/token")
    monkeypatch.setattr(charm.ExampleCharm, "_wait_for_daemon", lambda self: None)
    return commands


def context() -> "testing.Context[charm.ExampleCharm]":
    return testing.Context(charm.ExampleCharm, charm_root=EXAMPLE)


def clouds_secret(text: str = ZETA_ALPHA) -> testing.Secret:
    return testing.Secret(tracked_content={"clouds-yaml": text})


def test_install_puts_the_package_the_config_and_the_clouds_in_place(
    fake: FakeDaemon, machine: List[Tuple[str, ...]], tmp_path: Path
) -> None:
    deb = tmp_path / "openstack-image-helper.deb"
    deb.write_bytes(b"!<arch>\n")
    (tmp_path / "api-token").write_text("the-token")
    (tmp_path / "agent").mkdir()
    secret = clouds_secret()
    state = testing.State(
        resources={testing.Resource(name="openstack-image-helper-deb", path=deb)},
        secrets={secret},
        config={"clouds-yaml": secret.id},
    )
    out = context().run(context().on.install(), state)
    assert machine[0][:2] == ("apt-get", "install")
    assert machine[0][-1] == str(deb)
    assert machine[1] == ("systemctl", "enable", "--now", "openstack-image-helper")
    config = (tmp_path / "etc/config.d/50-charm.yaml").read_text()
    assert f'upload_dirs: ["{tmp_path / "images"}"]' in config
    assert (tmp_path / "images").is_dir()
    # The clouds went to the daemon, in the document's order: zeta is the default.
    assert list((fake.clouds or {})["clouds"]) == ["zeta", "alpha"]
    assert out.unit_status == testing.ActiveStatus("uploading to zeta")
    # grafana-agent's copy of the token: the same token, root only.
    assert (tmp_path / "agent/token").read_text() == "the-token"
    assert (tmp_path / "agent/token").stat().st_mode & 0o777 == 0o600


def test_without_a_secret_the_charm_says_what_to_set(fake: FakeDaemon) -> None:
    out = context().run(context().on.config_changed(), testing.State())
    assert out.unit_status == testing.BlockedStatus(
        "set clouds-yaml to a secret holding clouds.yaml"
    )
    assert fake.clouds is None


def test_a_new_revision_of_the_secret_is_taken_at_once(fake: FakeDaemon) -> None:
    secret = testing.Secret(
        tracked_content={"clouds-yaml": ZETA_ALPHA}, latest_content={"clouds-yaml": ALPHA_ONLY}
    )
    state = testing.State(secrets={secret}, config={"clouds-yaml": secret.id})
    ctx = context()
    out = ctx.run(ctx.on.secret_changed(secret), state)
    assert list((fake.clouds or {})["clouds"]) == ["alpha"]
    assert out.unit_status == testing.ActiveStatus("uploading to alpha")
    # The charm now tracks the new revision.
    assert out.get_secret(id=secret.id).tracked_content == {"clouds-yaml": ALPHA_ONLY}


def test_refused_credentials_block_the_unit(fake: FakeDaemon) -> None:
    secret = clouds_secret()
    fake.fail("clouds", CODE_OPENSTACK_UNAUTHORIZED)
    out = context().run(
        context().on.config_changed(),
        testing.State(secrets={secret}, config={"clouds-yaml": secret.id}),
    )
    assert out.unit_status == testing.BlockedStatus(
        "OpenStack refused the credentials of clouds.yaml"
    )


def test_upload_action_returns_the_result_and_publishes_the_image(
    fake: FakeDaemon, tmp_path: Path
) -> None:
    src = tmp_path / "jammy.img"
    src.write_bytes(b"an image")
    secret = clouds_secret()
    relation = testing.Relation("image", remote_app_name="runner")
    state = testing.State(
        leader=True,
        secrets={secret},
        config={"clouds-yaml": secret.id, "num-revisions": 2},
        relations={relation},
    )
    ctx = context()
    out = ctx.run(ctx.on.action("upload", params={"path": str(src)}), state)
    assert ctx.action_results == {
        "id": "fake-image-0001",
        "name": "jammy-openstack-image-helper-example-x64",
        "cloud": "zeta",
        "size": 8,
        "checksum": fake.images[0].checksum,
        "pruned": "",
        "unchanged": False,
        "attempts": 1,
        "stores": "",
    }
    [(_call, request)] = [c for c in fake.calls if c[0] == "upload"]
    assert (request["num_revisions"], request["src_path"]) == (2, str(src))
    published = out.get_relation(relation.id)
    assert isinstance(published, testing.Relation)
    databag: Dict[str, str] = dict(published.local_app_data)
    [entry] = json.loads(databag["images"])
    assert entry == {
        "cloud": "zeta",
        "base": "jammy",
        "arch": "x64",
        "app_name": "openstack-image-helper-example",
        "image_id": "fake-image-0001",
        "created_at": fake.images[0].created_at,
        "name": "jammy-openstack-image-helper-example-x64",
    }


def test_a_full_daemon_fails_the_action_with_when_to_retry(
    fake: FakeDaemon, tmp_path: Path
) -> None:
    src = tmp_path / "jammy.img"
    src.write_bytes(b"an image")
    secret = clouds_secret()
    fake.fail("upload", CODE_TOO_MANY_UPLOADS, retry_after=30)
    ctx = context()
    with pytest.raises(testing.ActionFailed) as caught:
        ctx.run(
            ctx.on.action("upload", params={"path": str(src)}),
            testing.State(secrets={secret}, config={"clouds-yaml": secret.id}),
        )
    assert "try again later (retry after 30 s)" in caught.value.message
    assert fake.images == []


def test_cos_agent_gets_the_scrape_rules_and_dashboards(fake: FakeDaemon) -> None:
    StubCOSAgentProvider.seen.clear()
    context().run(context().on.update_status(), testing.State())
    [kwargs] = StubCOSAgentProvider.seen
    [job] = kwargs["scrape_configs"]()
    assert job["static_configs"] == [{"targets": ["localhost:8427"]}]
    # The token is a file on the machine, never a value in relation data.
    assert set(job["authorization"]) == {"type", "credentials_file"}
    for key in ("metrics_rules_dir", "logs_rules_dir"):
        assert list((EXAMPLE / kwargs[key]).glob("*.rules"))
    [dashboards] = kwargs["dashboard_dirs"]
    assert list((EXAMPLE / dashboards).glob("*.json"))
