"""``thorbis-cache keyring new|add``: rings that KeyRing reads, and rotation that keeps
old values readable."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner

from thorbis_cache import CodecSettings, KeyRing, KeySchema
from thorbis_cache.cache.codec import SchemaCodec, make_converter
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cli import app

SECRET = KeySchema("hs.secret", str, params={"id": int}, sensitive=True)
KEY = b"tc:{acme}:hs.secret:1"


def keyring(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, ["keyring", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def codec(ring: KeyRing) -> SchemaCodec[str]:
    return SchemaCodec(SECRET, make_converter(), ring, CodecSettings())


def test_new_prints_a_ring_of_one_fresh_32_byte_key() -> None:
    spec = keyring("new")
    ring = KeyRing.from_string(spec)
    assert ring.key_ids == {"k1"}
    assert ring.active_key_id == "k1"
    assert len(base64.b64decode(spec.partition(":")[2])) == 32
    assert keyring("new") != spec  # fresh every time
    named = KeyRing.from_string(keyring("new", "--id", "2026-q1"))
    assert named.active_key_id == "2026-q1"


def test_add_rotates_and_values_sealed_under_the_old_primary_still_open() -> None:
    old_spec = keyring("new")
    old = KeyRing.from_string(old_spec)
    sealed = codec(old).encode("old secret", KEY, "acme")

    new_spec = keyring("add", old_spec)
    new = KeyRing.from_string(new_spec)
    assert new.key_ids == {"k1", "k2"}
    assert new.active_key_id == "k2"
    assert new_spec.startswith(old_spec + ",")  # the old key is kept as it was
    assert codec(new).decode(sealed, KEY, "acme").value == "old secret"
    fresh = codec(new).encode("new secret", KEY, "acme")
    assert b"k2" in fresh[:16]
    # Only the new primary opens what it sealed: it is really a new key.
    with pytest.raises(CorruptEntry):
        codec(old.with_active("k2", bytes(32))).decode(fresh, KEY, "acme")

    # The current ring may come from THORBIS_KEYRING; a marked primary is respected.
    third = KeyRing.from_string(keyring("add", env={"THORBIS_KEYRING": new_spec}))
    assert third.key_ids == {"k1", "k2", "k3"}
    assert third.active_key_id == "k3"
    marked = "*" + new_spec.replace(",k2:", ",x:")
    assert KeyRing.from_string(marked).active_key_id == "k1"
    assert KeyRing.from_string(keyring("add", marked)).active_key_id == "k2"


def test_json_output() -> None:
    out = json.loads(keyring("new", "--json"))
    assert set(out) == {"keyring", "active", "key_ids"}
    assert out["active"] == "k1"
    assert out["key_ids"] == ["k1"]
    added = json.loads(keyring("add", out["keyring"], "--json"))
    assert KeyRing.from_string(added["keyring"]).active_key_id == added["active"] == "k2"
    assert added["key_ids"] == ["k1", "k2"]


def test_to_string_round_trips_a_ring_whose_active_key_is_not_last() -> None:
    ring = KeyRing({"a": bytes(32), "b": b"\x01" * 32}, "a")
    again = KeyRing.from_string(ring.to_string())
    assert again.active_key_id == "a"
    assert again.key_ids == {"a", "b"}
    assert again.to_string() == ring.to_string()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["add"], {"THORBIS_KEYRING": ""}, "needs the current ring"),
    (["add", "k1:not-base64!"], None, "not valid base64"),
    (["add", "k1:" + base64.b64encode(bytes(16)).decode()], None, "32 bytes"),
    (["add", "k1:" + base64.b64encode(bytes(32)).decode(), "--id", "k1"], None,
     "already in the ring"),
    (["new", "--id", "no spaces"], None, "key id"),
    (["new", "k1:xyz"], None, "takes no KEYRING"),
])
def test_errors_are_one_line_and_never_show_key_material(
        args: list[str], env: dict[str, str] | None, message: str) -> None:
    result = CliRunner().invoke(app, ["keyring", *args], env=env)
    assert result.exit_code == 64  # bad input, as every command's (it was 1)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "AAAAAAAA" not in result.output
    assert result.stdout == ""
