"""The `openstack_image` relation library with ops' Scenario (`ops.testing`), no Juju."""

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, ClassVar, Dict, List

import pytest

if sys.version_info < (3, 10):
    pytest.skip("ops 3 (ops[testing]) needs Python 3.10", allow_module_level=True)

import ops
from ops import testing

from charms.openstack_image_helper.v0.image_info import (
    DATABAG_KEY,
    SCHEMA,
    ImageChangedEvent,
    ImageEntry,
    ImageInfoProvider,
    ImageInfoRequirer,
    validate,
)

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "interfaces/openstack_image/v0/schema.json"
JAMMY = ImageEntry(
    cloud="zeta",
    base="jammy",
    arch="x64",
    app_name="builder",
    image_id="0b4e4f7a-4f0e-4c4e-9c57-2f1b2a3c4d5e",
    created_at="2026-12-06T04:00:00Z",
    name="jammy-builder-x64",
)
NOBLE = dataclasses.replace(JAMMY, base="noble", name="noble-builder-x64", image_id="fe01")


class ProviderCharm(ops.CharmBase):
    """Publishes what the `publish` action's `entries` (JSON) say."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.images = ImageInfoProvider(self)
        framework.observe(self.on.publish_action, self._on_publish)

    def _on_publish(self, event: ops.ActionEvent) -> None:
        entries = [ImageEntry(**e) for e in json.loads(event.params["entries"])]
        event.set_results({"published": self.images.publish(entries)})


class RequirerCharm(ops.CharmBase):
    """Records every `image_changed` it sees."""

    seen: ClassVar[List[List[ImageEntry]]] = []

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.images = ImageInfoRequirer(self)
        framework.observe(self.images.on.image_changed, self._on_image_changed)

    def _on_image_changed(self, event: ImageChangedEvent) -> None:
        RequirerCharm.seen.append(event.entries)


PROVIDER_META = {"name": "builder", "provides": {"image": {"interface": "openstack_image"}}}
PROVIDER_ACTIONS = {"publish": {"params": {"entries": {"type": "string"}}}}
REQUIRER_META = {"name": "runner", "requires": {"image": {"interface": "openstack_image"}}}


def provider() -> "testing.Context[ProviderCharm]":
    return testing.Context(ProviderCharm, meta=PROVIDER_META, actions=PROVIDER_ACTIONS)


def requirer() -> "testing.Context[RequirerCharm]":
    RequirerCharm.seen = []
    return testing.Context(RequirerCharm, meta=REQUIRER_META)


def publish(
    state: testing.State, entries: List[ImageEntry]
) -> "tuple[testing.State, Dict[str, Any]]":
    ctx = provider()
    params = {"entries": json.dumps([e.to_dict() for e in entries])}
    out = ctx.run(ctx.on.action("publish", params=params), state)
    assert ctx.action_results is not None
    return out, ctx.action_results


def app_data(state: testing.State, relation_id: int) -> Dict[str, str]:
    """The local app databag of a relation in `state`."""
    relation = state.get_relation(relation_id)
    assert isinstance(relation, testing.Relation)
    return dict(relation.local_app_data)


def test_the_schema_file_is_the_librarys() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA


def test_provider_and_requirer_related_then_an_update() -> None:
    # The provider's leader publishes into the relation's app databag.
    relation = testing.Relation("image", remote_app_name="runner")
    out, results = publish(testing.State(leader=True, relations={relation}), [JAMMY])
    assert results == {"published": True}
    databag = app_data(out, relation.id)
    assert set(databag) == {DATABAG_KEY}
    assert json.loads(databag[DATABAG_KEY]) == [JAMMY.to_dict()]
    assert validate(json.loads(databag[DATABAG_KEY])) == []

    # The requirer sees exactly that databag as its remote app data: typed entries.
    ctx = requirer()
    seen_by_requirer = testing.Relation(
        "image", remote_app_name="builder", remote_app_data=dict(databag)
    )
    ctx.run(ctx.on.relation_changed(seen_by_requirer), testing.State(relations={seen_by_requirer}))
    assert RequirerCharm.seen == [[JAMMY]]

    # An update: the provider publishes two images; the requirer gets both.
    out, _ = publish(out, [JAMMY, NOBLE])
    databag = app_data(out, relation.id)
    updated = dataclasses.replace(seen_by_requirer, remote_app_data=dict(databag))
    ctx.run(ctx.on.relation_changed(updated), testing.State(relations={updated}))
    assert RequirerCharm.seen[-1] == [JAMMY, NOBLE]


def test_a_relation_created_later_gets_what_was_published() -> None:
    first = testing.Relation("image", remote_app_name="runner")
    out, _ = publish(testing.State(leader=True, relations={first}), [JAMMY])
    second = testing.Relation("image", remote_app_name="other-runner")
    state = dataclasses.replace(out, relations=frozenset({out.get_relation(first.id), second}))
    ctx = provider()
    after = ctx.run(ctx.on.relation_created(second), state)
    assert json.loads(app_data(after, second.id)[DATABAG_KEY]) == [JAMMY.to_dict()]


def test_a_non_leader_provider_publishes_nothing() -> None:
    relation = testing.Relation("image", remote_app_name="runner")
    out, results = publish(testing.State(leader=False, relations={relation}), [JAMMY])
    assert results == {"published": False}
    assert DATABAG_KEY not in app_data(out, relation.id)


def test_an_invalid_entry_is_refused_when_published() -> None:
    relation = testing.Relation("image", remote_app_name="runner")
    bad = dataclasses.replace(JAMMY, arch="sparc", app_name="Not_An_App")
    with pytest.raises(testing.errors.UncaughtCharmError) as caught:
        publish(testing.State(leader=True, relations={relation}), [bad])
    assert isinstance(caught.value.__cause__, ValueError)
    assert "arch" in str(caught.value.__cause__)
    assert "app_name" in str(caught.value.__cause__)


@pytest.mark.parametrize(
    "databag",
    [
        {DATABAG_KEY: "not json"},
        {DATABAG_KEY: json.dumps({"cloud": "zeta"})},
        {DATABAG_KEY: json.dumps([{**JAMMY.to_dict(), "password": "hunter2"}])},
        {DATABAG_KEY: json.dumps([{**JAMMY.to_dict(), "arch": "hunter2"}])},
        {DATABAG_KEY: json.dumps([{k: v for k, v in JAMMY.to_dict().items() if k != "name"}])},
    ],
    ids=["not-json", "not-a-list", "a-credential", "bad-arch", "missing-name"],
)
def test_a_bad_databag_is_logged_and_ignored(
    databag: Dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    good = testing.Relation(
        "image",
        remote_app_name="builder",
        remote_app_data={DATABAG_KEY: json.dumps([NOBLE.to_dict()])},
    )
    bad = testing.Relation("image", remote_app_name="broken", remote_app_data=databag)
    ctx = requirer()
    with caplog.at_level(logging.WARNING):
        ctx.run(ctx.on.relation_changed(bad), testing.State(relations={good, bad}))
    # No exception reached the hook; the good provider's entries are still there.
    assert RequirerCharm.seen == [[NOBLE]]
    assert any("ignored" in r.getMessage() for r in caplog.records)
    assert "hunter2" not in caplog.text


def test_a_departed_relation_takes_its_images_away() -> None:
    builder = testing.Relation(
        "image",
        remote_app_name="builder",
        remote_app_data={DATABAG_KEY: json.dumps([JAMMY.to_dict()])},
    )
    other = testing.Relation(
        "image",
        remote_app_name="other-builder",
        remote_app_data={DATABAG_KEY: json.dumps([NOBLE.to_dict()])},
    )
    ctx = requirer()
    state = testing.State(relations={builder, other})
    ctx.run(ctx.on.relation_broken(builder), state)
    assert RequirerCharm.seen == [[NOBLE]]
    # A unit departing (the app still related) keeps the app's images.
    ctx.run(ctx.on.relation_departed(other, remote_unit=0), state)
    assert sorted(e.base for e in RequirerCharm.seen[-1]) == ["jammy", "noble"]


def test_a_deferred_image_changed_keeps_its_entries() -> None:
    event = ImageChangedEvent(ops.Handle(None, "test", "1"), [JAMMY])
    restored = ImageChangedEvent(ops.Handle(None, "test", "2"))
    restored.restore(event.snapshot())
    assert restored.entries == [JAMMY]
