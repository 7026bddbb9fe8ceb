#!/usr/bin/env python3
"""The example charm's real code, run inside the nspawn test's container.

`ops[testing]` (Scenario) stands in for Juju: it hands the charm the event, the
`.deb` resource, the Juju secret holding clouds.yaml and the `image` relation.
Everything else is real: `apt-get install` of the resource, `systemctl enable
--now` of the DynamicUser unit, the daemon, the bed's Keystone and Glance.

Two boundaries are stubbed, and only these:
- `charms.grafana_agent.v0.cos_agent`: charmcraft fetches it when it packs the
  charm (`charm-libs`); it is not in the repository (as in charm/example/tests/unit);
- the port: the container shares the host's loopback (the bed is there), where
  8427 may be another daemon's, so the charm's `PORT` is the test's free port,
  and the library is told it through `OPENSTACK_IMAGE_HELPER_URL`.

    nspawn_charm.py install --deb D --clouds F --port P --app-name A
    nspawn_charm.py upload  --deb D --clouds F --port P --app-name A --path IMAGE

Prints one JSON line: the unit's status, the action's results and what the
charm published on the `image` relation.
"""

import argparse
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict

CHARM = Path(os.environ.get("OSIH_CHARM_DIR", "/root/charm"))


def stub_cos_agent() -> None:
    """`COSAgentProvider` that observes nothing (see the module docstring)."""
    import ops

    class COSAgentProvider(ops.Object):
        def __init__(self, charm: ops.CharmBase, **kwargs: Any) -> None:
            super().__init__(charm, kwargs.get("relation_name", "cos-agent"))

    module = types.ModuleType("charms.grafana_agent.v0.cos_agent")
    module.COSAgentProvider = COSAgentProvider  # type: ignore[attr-defined]
    for name in ("charms.grafana_agent", "charms.grafana_agent.v0"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["charms.grafana_agent.v0.cos_agent"] = module


def load_charm(port: int) -> types.ModuleType:
    """The example charm's module, pointed at the daemon's PORT."""
    stub_cos_agent()
    sys.path[:0] = [str(CHARM / "src"), str(CHARM / "lib")]
    import charm

    charm.PORT = port
    charm.HEALTH_URL = f"http://127.0.0.1:{port}/v1/health"
    os.environ["OPENSTACK_IMAGE_HELPER_URL"] = f"http://127.0.0.1:{port}"
    return sys.modules["charm"]


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the event (or action) the arguments name; what came out of it."""
    charm = load_charm(args.port)
    from ops import testing

    ctx = testing.Context(charm.ExampleCharm, charm_root=CHARM, app_name=args.app_name)
    secret = testing.Secret(tracked_content={"clouds-yaml": Path(args.clouds).read_text()})
    relation = testing.Relation("image", remote_app_name="runner")
    state = testing.State(
        leader=True,
        secrets={secret},
        config={"clouds-yaml": secret.id, "num-revisions": 2},
        relations={relation},
        resources={testing.Resource(name="openstack-image-helper-deb", path=args.deb)},
    )
    if args.event == "install":
        out = ctx.run(ctx.on.install(), state)
    else:
        out = ctx.run(ctx.on.action("upload", params={"path": args.path}), state)
    databag: Dict[str, str] = dict(out.get_relation(relation.id).local_app_data or {})
    return {
        "status": f"{out.unit_status.name}: {out.unit_status.message}",
        "results": ctx.action_results,
        "published": json.loads(databag.get("images", "[]")),
    }


def main() -> None:
    """Parse the arguments, run, print the outcome as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("event", choices=["install", "upload"])
    parser.add_argument("--deb", required=True, help="the openstack-image-helper-deb resource")
    parser.add_argument("--clouds", required=True, help="clouds.yaml, the secret's content")
    parser.add_argument("--port", required=True, type=int, help="the daemon's TCP port")
    parser.add_argument("--app-name", required=True, help="the Juju application's name")
    parser.add_argument("--path", help="the upload action's path")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
