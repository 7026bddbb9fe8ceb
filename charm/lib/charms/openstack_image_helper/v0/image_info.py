# Copyright 2026 openstack-image-helper authors.
# Licensed under the Apache License, Version 2.0.

"""Hand the images a charm uploaded to the charms that boot them: the `openstack_image` interface.

The provider (the charm that builds and uploads images, with openstack-image-helper)
publishes, in its application databag, one key, `images`, holding a JSON list of
`{cloud, base, arch, app_name, image_id, created_at, name}`. Nothing else: no
credentials, ever (the requirer has its own). The list is valid against the
interface's schema (`interfaces/openstack_image/v0/schema.json` in the
openstack-image-helper repository, embedded here as `SCHEMA`), checked when it is
published and when it is read. A databag that does not hold a valid list is logged
and ignored, never raised into the hook.

Example usage, provider (`metadata`/`charmcraft.yaml`: `provides: image: interface:
openstack_image`):

```python
from charms.openstack_image_helper.v0.image_info import ImageEntry, ImageInfoProvider


class BuilderCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.images = ImageInfoProvider(self)

    def _after_upload(self, result: UploadResult) -> None:
        self.images.publish([
            ImageEntry(cloud=result.cloud, base="jammy", arch="x64", app_name=self.app.name,
                       image_id=result.id, created_at=created_at, name=result.name),
        ])
```

Requirer (`requires: image: interface: openstack_image`):

```python
from charms.openstack_image_helper.v0.image_info import ImageInfoRequirer


class RunnerCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.images = ImageInfoRequirer(self)
        framework.observe(self.images.on.image_changed, self._on_image_changed)

    def _on_image_changed(self, event: ImageChangedEvent) -> None:
        for entry in event.entries:  # also: self.images.entries, at any time
            ...
```
"""

import dataclasses
import json
import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import ops

# The unique identifier of this library: never changes.
LIBID = "9d2a4c1e6b7f48a0b3c5d7e9f1a2b4c6"

# The major version: bumped on changes that break a charm using the library.
LIBAPI = 0

# The minor version: bumped on every change published within LIBAPI.
LIBPATCH = 1

__all__ = [
    "DATABAG_KEY",
    "SCHEMA",
    "ImageChangedEvent",
    "ImageEntry",
    "ImageInfoProvider",
    "ImageInfoRequirer",
    "ImageInfoRequirerEvents",
    "validate",
]

logger = logging.getLogger(__name__)

# The key of the provider's application databag that holds the list.
DATABAG_KEY = "images"

# The schema of the list (the decoded value of `DATABAG_KEY`): the repository's
# interfaces/openstack_image/v0/schema.json, as a test of the library checks.
SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/openstack-image-helper/charm/interfaces/openstack_image/v0/schema.json",
    "title": "openstack_image v0: the images a provider offers",
    "description": (
        'The value of the key "images" of the provider\'s application databag, once decoded '
        "from JSON: the images the provider uploaded, newest knowledge of each (cloud, base, "
        "arch, app_name). Never a credential: only these fields are allowed."
    ),
    "type": "array",
    "maxItems": 1000,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["cloud", "base", "arch", "app_name", "image_id", "created_at", "name"],
        "properties": {
            "cloud": {
                "description": (
                    "The name of the cloud (in the provider's clouds.yaml) the image is in."
                ),
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
            },
            "base": {
                "description": "The Ubuntu base the image was built for (a codename such as jammy).",  # noqa: E501
                "type": "string",
                "pattern": "^[a-z][a-z0-9.]*$",
                "maxLength": 32,
            },
            "arch": {
                "description": "The architecture, as openstack-image-helper names it.",
                "type": "string",
                "enum": ["x64", "arm64", "s390x", "ppc64le"],
            },
            "app_name": {
                "description": "The Juju application that built the image (part of its name).",
                "type": "string",
                "pattern": "^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$",
                "maxLength": 63,
            },
            "image_id": {
                "description": "The Glance image id.",
                "type": "string",
                "pattern": "^[A-Za-z0-9._-]+$",
                "minLength": 1,
                "maxLength": 255,
            },
            "created_at": {
                "description": "When Glance created the image, RFC 3339.",
                "type": "string",
                "pattern": (
                    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?"
                    "([Zz]|[+-][0-9]{2}:[0-9]{2})$"
                ),
            },
            "name": {
                "description": "The Glance image name (jammy-builder-x64).",
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
            },
        },
    },
}

_JSON_TYPES = {"array": list, "object": dict, "string": str}


def validate(value: Any, schema: Mapping[str, Any] = SCHEMA, where: str = "$") -> List[str]:
    """Check `value` against `schema`: the keywords the interface's schema uses.

    Those are `type` (array, object, string), `enum`, `pattern`, `minLength`,
    `maxLength`, `maxItems`, `items`, `properties`, `required` and
    `additionalProperties: false` (written here, not with the `jsonschema`
    package, so that the library needs nothing but `ops`).

    Args:
        value: the decoded JSON.
        schema: the schema (default: the interface's).
        where: the path of `value`, for the messages.

    Returns:
        What is wrong, one message per fault (naming where, never the value: a
        databag's wrong field may hold what must not be logged); empty when valid.
    """
    wanted = schema.get("type")
    if wanted is not None and not isinstance(value, _JSON_TYPES[wanted]):
        return [f"{where}: expected {wanted}, got {type(value).__name__}"]
    faults: List[str] = []
    if "enum" in schema and value not in schema["enum"]:
        faults.append(f"{where}: not one of {schema['enum']}")
    if isinstance(value, str):
        faults.extend(_string_faults(value, schema, where))
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            faults.append(f"{where}: more than {schema['maxItems']} items")
        for n, item in enumerate(value):
            faults.extend(validate(item, schema.get("items", {}), f"{where}[{n}]"))
    if isinstance(value, dict):
        faults.extend(_object_faults(value, schema, where))
    return faults


def _string_faults(value: str, schema: Mapping[str, Any], where: str) -> List[str]:
    faults = []
    if len(value) < schema.get("minLength", 0):
        faults.append(f"{where}: shorter than {schema['minLength']}")
    if len(value) > schema.get("maxLength", len(value)):
        faults.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        faults.append(f"{where}: does not match {schema['pattern']}")
    return faults


def _object_faults(value: Dict[str, Any], schema: Mapping[str, Any], where: str) -> List[str]:
    properties = schema.get("properties", {})
    faults = [
        f"{where}: {key!r} is missing" for key in schema.get("required", ()) if key not in value
    ]
    for key, item in value.items():
        if key in properties:
            faults.extend(validate(item, properties[key], f"{where}.{key}"))
        elif schema.get("additionalProperties", True) is False:
            # The key's name only: its value may be what must never be logged.
            faults.append(f"{where}: {key!r} is not allowed")
    return faults


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image the provider offers.

    Attributes:
        cloud: the cloud (in the provider's clouds.yaml) the image is in.
        base: the Ubuntu base (`jammy`).
        arch: the architecture (`x64`, `arm64`, `s390x`, `ppc64le`).
        app_name: the application that built the image.
        image_id: the Glance image id.
        created_at: when Glance created the image (RFC 3339).
        name: the Glance image name.
    """

    cloud: str
    base: str
    arch: str
    app_name: str
    image_id: str
    created_at: str
    name: str

    def to_dict(self) -> Dict[str, str]:
        """The entry as the databag holds it.

        Returns:
            Its fields.
        """
        return dataclasses.asdict(self)


def _decode(relation: ops.Relation, app: Optional[ops.Application]) -> List[ImageEntry]:
    """The valid list in `app`'s databag of `relation`; [] (logged) when there is none."""
    if app is None:
        return []
    raw = relation.data[app].get(DATABAG_KEY)
    if raw is None:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning(
            "%s relation %d: %r of %s is not JSON: ignored",
            relation.name,
            relation.id,
            DATABAG_KEY,
            app.name,
        )
        return []
    faults = validate(value)
    if faults:
        logger.warning(
            "%s relation %d: %r of %s is not valid (%s): ignored",
            relation.name,
            relation.id,
            DATABAG_KEY,
            app.name,
            "; ".join(faults[:5]),
        )
        return []
    return [ImageEntry(**entry) for entry in value]


class ImageInfoProvider(ops.Object):
    """The side that publishes images (the charm that uploads them)."""

    def __init__(self, charm: ops.CharmBase, relation_name: str = "image") -> None:
        """Handle the relation `relation_name` of `charm`.

        A relation created later gets what was published already.

        Args:
            charm: the charm.
            relation_name: the relation's name in `charmcraft.yaml`.
        """
        super().__init__(charm, relation_name)
        self._charm = charm
        self._relation_name = relation_name
        self.framework.observe(charm.on[relation_name].relation_created, self._on_created)

    def publish(self, entries: Sequence[ImageEntry]) -> bool:
        """Put `entries` in the app databag of every relation (the leader only).

        Args:
            entries: every image offered now (the list replaces the one before).

        Returns:
            True when published; False on a unit that is not the leader (only the
            leader may write the app databag), which logs it and does nothing.

        Raises:
            ValueError: if an entry is not valid against the schema (a bug of the
                charm: the message names the fields, never their values).
        """
        if not self._charm.unit.is_leader():
            logger.debug("not the leader: the %s images are the leader's to publish", len(entries))
            return False
        value = [entry.to_dict() for entry in entries]
        faults = validate(value)
        if faults:
            raise ValueError(f"image entries not valid for openstack_image: {'; '.join(faults)}")
        text = json.dumps(value, sort_keys=True)
        for relation in self._charm.model.relations[self._relation_name]:
            relation.data[self._charm.app][DATABAG_KEY] = text
        return True

    def published(self) -> List[ImageEntry]:
        """What this application published (read from a relation's databag).

        Returns:
            The entries, or [] when there is no relation or nothing published.
        """
        for relation in self._charm.model.relations[self._relation_name]:
            entries = _decode(relation, self._charm.app)
            if entries:
                return entries
        return []

    def _on_created(self, event: ops.RelationCreatedEvent) -> None:
        if not self._charm.unit.is_leader():
            return
        entries = self.published()
        if entries:
            text = json.dumps([entry.to_dict() for entry in entries], sort_keys=True)
            event.relation.data[self._charm.app][DATABAG_KEY] = text


class ImageChangedEvent(ops.EventBase):
    """The images offered changed: `entries` are every image offered now.

    Attributes:
        entries: the images of every related provider (valid ones only).
    """

    def __init__(self, handle: ops.Handle, entries: Sequence[ImageEntry] = ()) -> None:
        """Build the event.

        Args:
            handle: the framework's.
            entries: the images offered now.
        """
        super().__init__(handle)
        self.entries: List[ImageEntry] = list(entries)

    def snapshot(self) -> Dict[str, Any]:
        """For a deferred event.

        Returns:
            The entries, as dicts.
        """
        return {"entries": [entry.to_dict() for entry in self.entries]}

    def restore(self, snapshot: Dict[str, Any]) -> None:
        """For a deferred event.

        Args:
            snapshot: what `snapshot` gave.
        """
        self.entries = [ImageEntry(**entry) for entry in snapshot.get("entries", [])]


class ImageInfoRequirerEvents(ops.ObjectEvents):
    """The events of `ImageInfoRequirer`."""

    image_changed = ops.EventSource(ImageChangedEvent)


class ImageInfoRequirer(ops.Object):
    """The side that reads images (the charms that boot them)."""

    on = ImageInfoRequirerEvents()

    def __init__(self, charm: ops.CharmBase, relation_name: str = "image") -> None:
        """Handle the relation `relation_name` of `charm`.

        Args:
            charm: the charm.
            relation_name: the relation's name in `charmcraft.yaml`.
        """
        super().__init__(charm, relation_name)
        self._charm = charm
        self._relation_name = relation_name
        events = charm.on[relation_name]
        self.framework.observe(events.relation_changed, self._on_changed)
        self.framework.observe(events.relation_departed, self._on_changed)
        self.framework.observe(events.relation_broken, self._on_changed)

    @property
    def entries(self) -> List[ImageEntry]:
        """The images every related provider offers now (invalid databags left out).

        Returns:
            The entries, in relation order.
        """
        return self._entries(exclude=None)

    def _entries(self, exclude: Optional[ops.Relation]) -> List[ImageEntry]:
        found: List[ImageEntry] = []
        for relation in self._charm.model.relations[self._relation_name]:
            if exclude is not None and relation.id == exclude.id:
                continue
            found.extend(_decode(relation, relation.app))
        return found

    def _on_changed(self, event: ops.RelationEvent) -> None:
        gone = event.relation if isinstance(event, ops.RelationBrokenEvent) else None
        self.on.image_changed.emit(self._entries(exclude=gone))
