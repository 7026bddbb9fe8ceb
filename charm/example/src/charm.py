#!/usr/bin/env python3
# Copyright 2026 openstack-image-helper authors.
# Licensed under the Apache License, Version 2.0.

"""An example machine charm: images kept in Glance through openstack-image-helper.

- install: the .deb from the `openstack-image-helper-deb` resource, the daemon's config,
  the unit enabled and started;
- config-changed and secret-changed: clouds.yaml from the Juju secret of the
  `clouds-yaml` option (a new revision is taken at once) into the daemon;
- the `upload` action: `OpenstackManager.upload`, its `UploadResult` as the action's
  results, and the image published on the `image` relation (`ImageInfoProvider`);
- COS: the daemon's /metrics, alert rules and dashboard through `cos_agent`.
"""

import logging
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import ops

from charms.grafana_agent.v0.cos_agent import COSAgentProvider
from charms.openstack_image_helper.v0.image_info import ImageEntry, ImageInfoProvider
from charms.openstack_image_helper.v0.openstack_manager import (
    ApiTokenError,
    CredentialsError,
    OpenstackImageHelperError,
    OpenstackManager,
    PermanentError,
    TransientError,
    UploadImageConfig,
    UploadResult,
)

logger = logging.getLogger(__name__)

# The daemon's config as the charm writes it, and where it lets uploads come from.
# A drop-in, not the packaged config.yaml (a dpkg conffile): a reinstall or an
# upgrade of the package never prompts about it, nor replaces it.
CONFIG_PATH = Path("/etc/openstack-image-helper/config.d/50-charm.yaml")
IMAGES_DIR = Path("/var/lib/openstack-image-helper/images")
TOKEN_FILE = Path("/var/lib/openstack-image-helper/api-token")
# A copy of the API token that grafana-agent (a confined snap) can read for the
# scrape's `credentials_file`: the token never goes into relation data.
SCRAPE_TOKEN_FILE = Path("/var/snap/grafana-agent/current/openstack-image-helper-api-token")
PORT = 8427
HEALTH_URL = f"http://127.0.0.1:{PORT}/v1/health"


def daemon_config() -> str:
    """The daemon's config: loopback only, uploads from IMAGES_DIR."""
    return (
        "# Written by the openstack-image-helper-example charm.\n"
        f'listen: "127.0.0.1:{PORT}"\n'
        f'upload_dirs: ["{IMAGES_DIR}"]\n'
    )


def run(*args: str) -> None:
    """Run a command of the machine; its failure fails the hook (Juju retries it)."""
    logger.info("running %s", " ".join(args))
    subprocess.run(args, check=True, capture_output=True)  # noqa: S603 (the charm's own)


class ExampleCharm(ops.CharmBase):
    """The example charm."""

    def __init__(self, framework: ops.Framework) -> None:
        """Observe the hooks, the action, the relation and COS."""
        super().__init__(framework)
        self.images = ImageInfoProvider(self, relation_name="image")
        self.cos = COSAgentProvider(
            self,
            relation_name="cos-agent",
            scrape_configs=self._scrape_configs,
            metrics_rules_dir="./src/prometheus_alert_rules",
            logs_rules_dir="./src/loki_alert_rules",
            dashboard_dirs=["./src/grafana_dashboards"],
            refresh_events=[self.on.config_changed, self.on.upgrade_charm],
        )
        framework.observe(self.on.install, self._on_install)
        framework.observe(self.on.upgrade_charm, self._on_install)
        framework.observe(self.on.config_changed, self._on_clouds_changed)
        framework.observe(self.on.secret_changed, self._on_clouds_changed)
        framework.observe(self.on.upload_action, self._on_upload)

    def _scrape_configs(self) -> List[Dict[str, Any]]:
        """The daemon's /metrics, authorised with a copy of its API token (a file)."""
        return [
            {
                "job_name": "openstack-image-helper",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(SCRAPE_TOKEN_FILE)},
                "static_configs": [{"targets": [f"localhost:{PORT}"]}],
            }
        ]

    def _on_install(self, _: ops.EventBase) -> None:
        self.unit.status = ops.MaintenanceStatus("installing openstack-image-helper")
        deb = self.model.resources.fetch("openstack-image-helper-deb")
        run("apt-get", "install", "-y", "--no-install-recommends", str(deb))
        IMAGES_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        CONFIG_PATH.parent.mkdir(parents=True, exist_ok=True)
        CONFIG_PATH.write_text(daemon_config())
        run("systemctl", "enable", "--now", "openstack-image-helper")
        self._wait_for_daemon()
        self._copy_scrape_token()
        self._on_clouds_changed(None)

    def _wait_for_daemon(self, timeout: float = 30.0) -> None:
        """Until /v1/health answers (the daemon writes its token before it does)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(HEALTH_URL, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _copy_scrape_token(self) -> None:
        if SCRAPE_TOKEN_FILE.parent.is_dir() and TOKEN_FILE.exists():
            shutil.copyfile(TOKEN_FILE, SCRAPE_TOKEN_FILE)
            SCRAPE_TOKEN_FILE.chmod(0o600)

    def _manager(self) -> Optional[OpenstackManager]:
        """The clouds of the secret put into the daemon; None (and a status) when not."""
        secret_id = self.config.get("clouds-yaml")
        if not secret_id:
            self.unit.status = ops.BlockedStatus("set clouds-yaml to a secret holding clouds.yaml")
            return None
        try:
            # refresh: a new revision of the secret is the one used from now on.
            content = self.model.get_secret(id=str(secret_id)).get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError) as exc:
            self.unit.status = ops.BlockedStatus(f"cannot read the clouds-yaml secret: {exc}")
            return None
        try:
            return OpenstackManager.from_secret_content(content)
        except CredentialsError:
            self.unit.status = ops.BlockedStatus(
                "OpenStack refused the credentials of clouds.yaml"
            )
        except ApiTokenError:
            self.unit.status = ops.BlockedStatus("openstack-image-helper refused its API token")
        except TransientError as exc:
            self.unit.status = ops.WaitingStatus(f"openstack-image-helper: {exc.code}")
        except OpenstackImageHelperError as exc:
            self.unit.status = ops.BlockedStatus(f"clouds.yaml refused: {exc.code}")
        return None

    def _on_clouds_changed(self, _: Optional[ops.EventBase]) -> None:
        manager = self._manager()
        if manager is not None:
            self.unit.status = ops.ActiveStatus(f"uploading to {manager.default_cloud}")

    def _on_upload(self, event: ops.ActionEvent) -> None:
        manager = self._manager()
        if manager is None:
            event.fail(f"no clouds: {self.unit.status.message}")
            return
        config = UploadImageConfig(
            arch=str(event.params.get("arch", "x64")),
            app_name=self.app.name,
            base=str(event.params.get("base", "jammy")),
            num_revisions=int(self.config.get("num-revisions", 3)),
            src_path=str(event.params["path"]),
        )
        try:
            result = manager.upload(config)
        except TransientError as exc:
            wait = f" (retry after {exc.retry_after:.0f} s)" if exc.retry_after else ""
            event.fail(f"upload not done, try again later{wait}: {exc}")
            return
        except PermanentError as exc:
            event.fail(f"upload refused: {exc}")
            return
        event.set_results(_results(result))
        self._publish(manager, config, result)

    def _publish(
        self, manager: OpenstackManager, config: UploadImageConfig, result: UploadResult
    ) -> None:
        latest = manager.get_latest_image(config.base, config.app_name, config.arch)
        if latest is None or latest.created_at is None or result.cloud is None:
            return
        entry = ImageEntry(
            cloud=result.cloud,
            base=str(config.base),
            arch=str(config.arch),
            app_name=config.app_name,
            image_id=latest.id,
            created_at=latest.created_at,
            name=latest.name,
        )
        # One entry per (cloud, base, arch): the new one replaces its predecessor.
        key = (entry.cloud, entry.base, entry.arch)
        entries = [e for e in self.images.published() if (e.cloud, e.base, e.arch) != key]
        self.images.publish([*entries, entry])


def _results(result: UploadResult) -> Dict[str, Any]:
    """An `UploadResult` as action results (Juju's keys: lowercase and hyphens)."""
    return {
        "id": result.id,
        "name": result.name,
        "cloud": result.cloud or "",
        "size": result.size,
        "checksum": result.checksum,
        "pruned": ",".join(result.pruned),
        "unchanged": result.unchanged,
        "attempts": result.attempts,
        "stores": ",".join(result.stores or []),
    }


if __name__ == "__main__":  # pragma: nocover
    ops.main(ExampleCharm)
