"""``thorbis-cache keyring new|add``: make a master key ring, and rotate it.

* ``new``: a ring of one fresh 32-byte key (``k1:BASE64``, from :func:`os.urandom`).
* ``add [KEYRING]``: the ring (an argument, or ``THORBIS_KEYRING``) with a fresh key
  added as the new primary: new values are encrypted with it, the old keys keep
  decrypting what they sealed (``docs/envelope.md``, rotation).

The ring goes to stdout alone, so that ``$(thorbis-cache keyring new)`` captures it; what
to do with it goes to stderr. The output *is* the secret: store it in a secret manager
or the deployment's environment, never in the repository or a log.
"""

from __future__ import annotations

import enum
import json
import os
import re
from typing import Annotated

import typer

from thorbis_cache.cache.crypto import MASTER_KEY_SIZE, KeyRing
from thorbis_cache.cli.options import BadInput
from thorbis_cache.errors import ConfigurationError, KeyRingError

__all__ = ["KeyringAction", "keyring_command", "next_key_id"]

ENV = "THORBIS_KEYRING"
_NUMBERED = re.compile(r"k(\d+)")


class KeyringAction(enum.Enum):
    """What ``keyring`` does."""

    new = "new"
    add = "add"


def next_key_id(ring: KeyRing) -> str:
    """``k<n+1>`` for the highest ``k<n>`` of ``ring`` (``k1`` for none)."""
    numbers = [int(m.group(1)) for i in ring.key_ids if (m := _NUMBERED.fullmatch(i))]
    return f"k{max(numbers, default=0) + 1}"


def keyring_command(
    action: Annotated[KeyringAction, typer.Argument(
        help="new: a ring of one fresh key; add: KEYRING plus a fresh key as its new "
             "primary (the old keys keep decrypting).")],
    keyring: Annotated[str | None, typer.Argument(
        help=f"add: the current ring (default: env {ENV}).", show_default=False)] = None,
    key_id: Annotated[str | None, typer.Option(
        "--id", help="Id of the new key (default: k1, or the next kN).",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print {keyring, active, key_ids} as JSON.")] = False,
) -> None:
    """Print a new master key ring, or a ring with a new primary key (rotation)."""
    try:
        ring = _ring(action, keyring, key_id)
    except (ConfigurationError, KeyRingError) as exc:  # what was given: bad input
        raise BadInput(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"keyring": ring.to_string(), "active": ring.active_key_id,
                               "key_ids": sorted(ring.key_ids)}))
    else:
        typer.echo(ring.to_string())
    older = ", ".join(sorted(ring.key_ids - {ring.active_key_id}))
    typer.echo(f"active key {ring.active_key_id}"
               + (f"; older key(s) {older} keep decrypting until retired" if older else "")
               + f". Store the ring as a secret ({ENV}), never in the repository.", err=True)


def _ring(action: KeyringAction, keyring: str | None, key_id: str | None) -> KeyRing:
    """The ring ``keyring_command`` prints.

    :raises ConfigurationError: the arguments do not go together.
    :raises KeyRingError: the ring or the key id is malformed, or the id taken.
    """
    if action is KeyringAction.new:
        if keyring is not None:
            raise ConfigurationError("keyring new takes no KEYRING (did you mean add?)")
        ring = KeyRing({key_id or "k1": os.urandom(MASTER_KEY_SIZE)}, key_id or "k1")
    else:
        spec = keyring if keyring is not None else os.environ.get(ENV, "")
        if not spec:
            raise ConfigurationError(f"keyring add needs the current ring: pass it as "
                                     f"KEYRING or set {ENV}")
        old = KeyRing.from_string(spec)
        new_id = key_id or next_key_id(old)
        if new_id in old.key_ids:
            raise KeyRingError(f"key id {new_id!r} is already in the ring; choose another --id")
        ring = old.with_active(new_id, os.urandom(MASTER_KEY_SIZE))
    return ring
