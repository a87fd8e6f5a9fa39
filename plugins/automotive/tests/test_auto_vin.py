"""VIN validation: known VINs, every kind of bad input, and hypothesis -- a generated
valid VIN passes, and any single mutation that changes its check sum fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import InvalidKeyError, InvalidParameterError

from thorbis_automotive.schemas import VEHICLE_HISTORY, vehicle_history_key
from thorbis_automotive.vin import (
    ALPHABET,
    CHECK_POSITION,
    WEIGHTS,
    CheckDigitRule,
    InvalidVinError,
    check_digit,
    is_valid_vin,
    transliterate,
    validate_vin,
)

# The worked example of 49 CFR 565 / ISO 3779 references (check digit 'X').
KNOWN = "1M8GDM9AXKP042788"


def with_check(draft: str) -> str:
    return draft[:CHECK_POSITION] + check_digit(draft) + draft[CHECK_POSITION + 1:]


@st.composite
def valid_vins(draw: st.DrawFn, north_american: bool = False) -> str:
    first = draw(st.sampled_from("12345" if north_american else ALPHABET))
    rest = draw(st.text(alphabet=ALPHABET, min_size=16, max_size=16))
    return with_check(first + rest)


def test_known_vins() -> None:
    assert check_digit(KNOWN) == "X"
    assert validate_vin(KNOWN) == KNOWN
    assert check_digit("11111111111111111") == "1"  # 89 = 8 * 11 + 1
    # Hand-computed: 1HGCM826?3A004352 sums to 311 = 28 * 11 + 3.
    assert check_digit("1HGCM82633A004352") == "3"
    assert validate_vin("  1m8gdm9axkp042788\n") == KNOWN  # normalised


@pytest.mark.parametrize(
    ("vin", "fragment"),
    [
        ("1M8GDM9AXKP04278", "16 characters, a VIN has 17"),
        ("1M8GDM9AXKP0427888", "18 characters"),
        ("", "0 characters"),
        ("1M8GDM9AXKP04278O", "'O' not allowed (I, O and Q are never used)"),
        ("IM8GDM9AXKP042788", "'I' not allowed"),
        ("1M8GDM9AXKP04278-", "'-' not allowed; a VIN is A-Z and 0-9"),
        ("1M8GDM9A1KP042788", "check digit (position 9) is '1', the other characters give 'X'"),
    ],
)
def test_bad_vins_name_the_schema_parameter_and_problem(vin: str, fragment: str) -> None:
    with pytest.raises(InvalidVinError) as info:
        vehicle_history_key("acme", vin)
    err = info.value
    assert isinstance(err, InvalidParameterError)
    assert isinstance(err, ValueError)
    assert (err.schema, err.parameter, err.vin) == (VEHICLE_HISTORY.name, "vin", vin)
    assert fragment in str(err)
    assert str(err).startswith("key schema 'auto.vehicle_history', parameter 'vin'")


def test_not_a_string() -> None:
    with pytest.raises(InvalidVinError, match="expected str, got int"):
        validate_vin(12345678901234567)


def test_check_digit_rule() -> None:
    # A European-market VIN with a filler in position 9: valid unless ALWAYS.
    euro = "WVWZZZ1JZXW000001"
    assert check_digit(euro) != "Z"
    assert validate_vin(euro) == euro
    assert validate_vin(euro, rule=CheckDigitRule.NEVER) == euro
    with pytest.raises(InvalidVinError, match="check digit"):
        validate_vin(euro, rule=CheckDigitRule.ALWAYS)
    # The same body made North American: enforced by the default rule.
    with pytest.raises(InvalidVinError, match="check digit"):
        validate_vin("1" + euro[1:])
    assert validate_vin("1" + euro[1:], rule=CheckDigitRule.NEVER) == "1" + euro[1:]


def test_transliteration_table() -> None:
    assert [transliterate(c) for c in "ABCDEFGH"] == list(range(1, 9))
    assert [transliterate(c) for c in "JKLMNPR"] == [1, 2, 3, 4, 5, 7, 9]
    assert [transliterate(c) for c in "STUVWXYZ"] == list(range(2, 10))
    assert len(WEIGHTS) == 17
    assert WEIGHTS[CHECK_POSITION] == 0
    for c in "IOQ":
        with pytest.raises(KeyError):
            transliterate(c)


@given(valid_vins())
def test_generated_vins_are_valid_under_every_rule(vin: str) -> None:
    for rule in CheckDigitRule:
        assert validate_vin(vin, rule=rule) == vin
        assert is_valid_vin(vin, rule)
    assert vehicle_history_key("acme", vin.lower()).body == f"{{acme}}:auto.vehicle_history:{vin}"


@given(valid_vins(north_american=True), st.integers(0, 16), st.sampled_from(ALPHABET))
def test_a_mutation_that_changes_the_sum_is_caught(vin: str, pos: int, char: str) -> None:
    mutated = vin[:pos] + char + vin[pos + 1:]
    if pos == CHECK_POSITION:
        changes = char != vin[pos]
    else:
        # A substitution changes the sum by weight * (new - old), and 11 is prime: the
        # check digit catches it unless the two characters transliterate alike.
        changes = transliterate(char) != transliterate(vin[pos])
    if pos == 0 and char not in "12345":
        # No longer North American: the default rule checks the format only.
        assert is_valid_vin(mutated)
        assert is_valid_vin(mutated, CheckDigitRule.ALWAYS) is not changes
        return
    assert is_valid_vin(mutated) is not changes


@given(valid_vins(), st.integers(0, 16), st.sampled_from("IOQio-* é"))
def test_forbidden_characters_and_lengths_are_caught(vin: str, pos: int, char: str) -> None:
    for rule in CheckDigitRule:
        assert not is_valid_vin(vin[:pos] + char + vin[pos + 1:], rule)
        assert not is_valid_vin(vin[:pos] + vin[pos + 1:], rule)  # 16 characters
        assert not is_valid_vin(vin + vin[pos], rule)  # 18 characters


def test_the_schema_itself_checks_every_vin_key() -> None:
    """Keys built without vehicle_history_key (a warmer, the invalidation engine) are
    checked by the schema's validator too."""
    assert VEHICLE_HISTORY.key("acme", vin=KNOWN).params["vin"] == KNOWN
    with pytest.raises(InvalidVinError, match="check digit") as info:
        VEHICLE_HISTORY.key("acme", vin="1M8GDM9A1KP042788")
    assert (info.value.schema, info.value.parameter) == (VEHICLE_HISTORY.name, "vin")
    with pytest.raises(InvalidVinError, match="not normalised"):
        VEHICLE_HISTORY.key("acme", vin=KNOWN.lower())
    with pytest.raises(InvalidParameterError, match="expected str, got int"):
        VEHICLE_HISTORY.key("acme", vin=12345678901234567)
    registry = SchemaRegistry()
    registry.register(VEHICLE_HISTORY)
    with pytest.raises(InvalidKeyError, match="check digit"):
        registry.parse("tc", "tc:{acme}:auto.vehicle_history:1M8GDM9A1KP042788")
