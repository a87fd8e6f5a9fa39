"""Vehicle identification numbers: validation and the check digit (ISO 3779, 49 CFR 565).

A VIN is 17 characters of ``A-Z`` and ``0-9`` without ``I``, ``O`` and ``Q`` (they read
as 1 and 0). Position 9 is a check digit: each character is transliterated to a number
(digits are themselves; ``A-H`` 1-8, ``J-N`` 1-5, ``P`` 7, ``R`` 9, ``S-Z`` 2-9), the
numbers are multiplied by the weights ``8 7 6 5 4 3 2 10 0 9 8 7 6 5 4 3 2`` (position 9
itself weighs 0), and the sum modulo 11 is the check digit, 10 written ``X``.

**When the check digit is enforced.** 49 CFR 565 requires it of every vehicle made for
the North American market; ISO 3779 alone does not (many European-market VINs carry a
plant or filler character in position 9). A VIN does not say which market it was built
for, but its first character (the region of the WMI) says where it was made: ``1``-``5``
is North America. The rule here, :attr:`CheckDigitRule.NORTH_AMERICA` and the default,
enforces the check digit for those, where it is certain to apply, and only the format
for the others. :attr:`CheckDigitRule.ALWAYS` is for a shop that services only
US-market vehicles (a Japanese-built car sold in the US has a valid check digit too);
:attr:`CheckDigitRule.NEVER` checks the format only. The database's
``auto.vin_is_valid(text)`` (``sql/tables.sql``) enforces the default rule on every
stored VIN, so a key built from a stored row is always valid.

The model-year rules of 49 CFR 565 (position 10 is never ``U``, ``Z`` or ``0``) are not
enforced: pre-1981 and non-US VINs use position 10 otherwise, and it is not needed to
identify a vehicle.

A VIN is normalised before it is checked: surrounding whitespace is stripped and
letters are upper-cased, so ``" 1m8gdm9axkp042788"`` names the same vehicle (and the same
cache key) as ``"1M8GDM9AXKP042788"``. A bad VIN is an :class:`InvalidVinError`, a
:class:`~thorbis_cache.errors.InvalidParameterError` naming the key schema and the
parameter it was given for.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
from thorbis_cache.errors import InvalidParameterError

__all__ = [
    "ALPHABET",
    "WEIGHTS",
    "CheckDigitRule",
    "InvalidVinError",
    "VinCheck",
    "check_digit",
    "is_valid_vin",
    "normalize_vin",
    "transliterate",
    "validate_vin",
]

#: The characters a VIN may contain (no I, O, Q).
ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
#: The weight of each position in the check-digit sum.
WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
#: Index (0-based) of the check digit.
CHECK_POSITION = 8
#: First characters of the WMI regions of North America (US 1, 4, 5; Canada 2; Mexico 3).
NORTH_AMERICA = frozenset("12345")

_VALUES: dict[str, int] = {str(d): d for d in range(10)}
for _letters, _start in (("ABCDEFGH", 1), ("JKLMN", 1), ("P", 7), ("R", 9), ("STUVWXYZ", 2)):
    for _i, _c in enumerate(_letters):
        _VALUES[_c] = _start + _i


class CheckDigitRule(enum.Enum):
    """When the position-9 check digit is enforced (see the module docstring)."""

    NORTH_AMERICA = "north_america"  #: when the first character is 1-5 (the default)
    ALWAYS = "always"  #: for every VIN (a shop serving US-market vehicles only)
    NEVER = "never"  #: format only

    def applies_to(self, vin: str) -> bool:
        """Whether the check digit is enforced for ``vin`` (of a valid format)."""
        if self is CheckDigitRule.ALWAYS:
            return True
        if self is CheckDigitRule.NEVER:
            return False
        return vin[:1] in NORTH_AMERICA


class InvalidVinError(InvalidParameterError):
    """A VIN that is not 17 valid characters, or whose check digit is wrong.

    :ivar vin: the text given (as given, before normalisation).
    """

    def __init__(self, schema: str, parameter: str, vin: object, problem: str) -> None:
        self.vin = vin
        super().__init__(schema, parameter, f"invalid VIN {vin!r}: {problem}")


def transliterate(char: str) -> int:
    """The number a VIN character stands for in the check-digit sum.

    :raises KeyError: ``char`` is not a VIN character.
    """
    return _VALUES[char]


def check_digit(vin: str) -> str:
    """The check digit (``0``-``9`` or ``X``) of a 17-character VIN of valid characters;
    the character in position 9 is ignored (its weight is 0).

    :raises ValueError: ``vin`` is not 17 characters of :data:`ALPHABET`.
    """
    if len(vin) != 17 or any(c not in _VALUES for c in vin):
        raise ValueError(f"{vin!r} is not 17 VIN characters")
    total = sum(_VALUES[c] * w for c, w in zip(vin, WEIGHTS))
    rest = total % 11
    return "X" if rest == 10 else str(rest)


def _problem(vin: str, rule: CheckDigitRule) -> str | None:
    if len(vin) != 17:
        return f"{len(vin)} characters, a VIN has 17"
    bad = sorted({c for c in vin if c not in _VALUES})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        why = " (I, O and Q are never used)" if set(bad) & set("IOQ") else ""
        return f"character(s) {shown} not allowed{why}; a VIN is A-Z and 0-9"
    if rule.applies_to(vin):
        expected = check_digit(vin)
        if vin[CHECK_POSITION] != expected:
            return (f"check digit (position 9) is {vin[CHECK_POSITION]!r}, the other "
                    f"characters give {expected!r}")
    return None


def validate_vin(
    vin: object,
    *,
    schema: str = "auto.vin",
    parameter: str = "vin",
    rule: CheckDigitRule = CheckDigitRule.NORTH_AMERICA,
) -> str:
    """The normalised VIN (stripped, upper case) if it is valid under ``rule``.

    :param vin: the VIN as entered.
    :param schema: the key schema (or other context) named in the error.
    :param parameter: the parameter named in the error.
    :param rule: when the check digit is enforced.
    :raises InvalidVinError: not a string, wrong length, a character outside
        :data:`ALPHABET`, or a wrong check digit where ``rule`` enforces it.
    """
    if not isinstance(vin, str):
        raise InvalidVinError(schema, parameter, vin, f"expected str, got {type(vin).__name__}")
    text = vin.strip().upper()
    problem = _problem(text, rule)
    if problem is not None:
        raise InvalidVinError(schema, parameter, vin, problem)
    return text


def is_valid_vin(vin: str, rule: CheckDigitRule = CheckDigitRule.NORTH_AMERICA) -> bool:
    """Whether ``vin`` is valid under ``rule`` as written (no normalisation: this is the
    test the database applies to stored VINs)."""
    return _problem(vin, rule) is None


def normalize_vin(vin: object) -> object:
    """``vin`` stripped and upper-cased if it is a string (anything else as is: the
    check that follows names its type)."""
    return vin.strip().upper() if isinstance(vin, str) else vin


@attrs.frozen
class VinCheck:
    """The key schema's validator of a VIN parameter: a VIN as the database stores it
    (normalised, valid under ``rule``; ``auto.vin_is_valid`` applies the default).

    Every key of the schema is checked, however it is built: by
    :func:`~thorbis_automotive.schemas.vehicle_history_key` (which normalises first), by
    a warmer, or by the invalidation engine from a changed row.

    :ivar schema: the key schema named in the error.
    :ivar parameter: the parameter named in the error.
    :ivar rule: when the check digit is enforced.
    """

    schema: str
    parameter: str = "vin"
    rule: CheckDigitRule = CheckDigitRule.NORTH_AMERICA

    def __call__(self, vin: str) -> None:
        """Accept ``vin``, or raise :class:`InvalidVinError`."""
        problem = _problem(vin, self.rule)
        if problem is None:
            return
        if _problem(vin.strip().upper(), self.rule) is None:
            problem = ("not normalised (upper case, no surrounding whitespace): build the "
                       "key with vehicle_history_key, or normalize_vin first")
        raise InvalidVinError(self.schema, self.parameter, vin, problem)

    def hypothesis_strategy(self) -> Any:
        """Valid VINs (every rule), for the contract kit's generated keys."""
        from hypothesis import strategies as st

        return st.text(alphabet=ALPHABET, min_size=17, max_size=17).map(
            lambda v: v[:CHECK_POSITION] + check_digit(v) + v[CHECK_POSITION + 1:])
