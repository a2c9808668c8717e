"""Lease ids name the instance that issued them: `<instance_id>/<token>`."""

from __future__ import annotations


def issuing_instance(lease_id: str) -> str | None:
    """The instance id of a lease, or None when the id is malformed.

    Split on the last '/' because instance ids may themselves contain slashes; tokens do not.
    """
    instance_id, slash, token = lease_id.rpartition("/")
    if not slash or not instance_id or not token:
        return None
    return instance_id
