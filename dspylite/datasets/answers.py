"""Reading answers the way benchmarks write them: numbers ("9 apples", "#### 1,234", "5/2") and
yes/no values ("True", "no"), plus the match rules the benchmark metrics use.

    parse_number("#### 1,234")     -> 1234.0     (GSM8K: the text after the last "####")
    parse_number("9 apples")       -> 9.0        (ASDiv: "9 apples", or "9 (apples)" on the hub)
    parse_number("so it is $18.")  -> 18.0       (free text: the last number in it)
    parse_number("-1/3")           -> -0.333...  (a fraction is its value)
    parse_bool("True") -> True;  parse_bool("no, it is not") -> False;  parse_bool("maybe") -> None
"""

from __future__ import annotations

import math
import re
from typing import Any

# A number: thousands groups ("1,234") or plain digits, an optional decimal part, an optional
# "/denominator". A comma not followed by exactly three digits separates list items ("3, 4").
_NUMBER = re.compile(
    r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:\s*/\s*(\d+(?:\.\d+)?))?(?![\d])|(-?)\.(\d+)"
)
_GSM8K_MARK = "####"
_TRUE = {"true", "yes", "y", "1", "correct", "right"}
_FALSE = {"false", "no", "n", "0", "incorrect", "wrong"}


def _value(match: re.Match[str]) -> float | None:
    if match.group(6) is not None:  # ".5"
        return float(f"{match.group(5)}0.{match.group(6)}")
    sign, whole, decimals, denominator = match.group(1), match.group(2), match.group(3), match.group(4)
    number = float(whole.replace(",", "") + (decimals or ""))
    if denominator is not None:
        if float(denominator) == 0:
            return None
        number /= float(denominator)
    return -number if sign else number


def parse_number(value: Any) -> float | None:
    """The number an answer states, or None when it states none.

    Numbers (not bools) are themselves. In text, what follows the last "####" is read when present
    (GSM8K's gold format); otherwise the last number in the text, so both a bare "9 apples" and a
    sentence ending "... so the answer is 9." give 9. Thousands commas and "$" are ignored.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = str(value)
    if _GSM8K_MARK in text:
        text = text.rsplit(_GSM8K_MARK, 1)[1]
    text = text.replace("$", "")
    found = [_value(m) for m in _NUMBER.finditer(text)]
    found = [v for v in found if v is not None]
    return found[-1] if found else None


# A gold answer that is one number, optionally followed by a unit: "9", "9 apples", "9 (apples)",
# "2.5 hours", "5/2". Times ("3:30 p.m."), ratios ("5:6"), lists ("5; 12"), ordinals ("6th") and
# mixed numbers ("1 1/2") are not one number; ASDiv keeps them out of its numeric task.
_SINGLE_NUMBER = re.compile(r"^\s*-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:\s+[^\d\s:;/][^;]*)?\s*$")


def single_number(text: str) -> float | None:
    """The value of a gold answer that is exactly one number (and maybe a unit), else None."""
    if not _SINGLE_NUMBER.match(text or ""):
        return None
    return parse_number(text.split()[0])


def numbers_match(predicted: Any, gold: Any) -> bool:
    """Whether ``predicted`` states ``gold``'s number: equal up to float noise, or (for a gold value
    that is not a whole number) equal after rounding both to two decimals, as "0.33" for 1/3."""
    got, want = parse_number(predicted), parse_number(gold)
    if got is None or want is None:
        return False
    if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6):
        return True
    return not float(want).is_integer() and round(got, 2) == round(want, 2)


def parse_bool(value: Any) -> bool | None:
    """True/False from a bool, or from text whose first word is yes/no/true/false (any case), else None."""
    if isinstance(value, bool):
        return value
    if value is None:
        return None
    words = re.findall(r"[a-z0-9]+", str(value).lower())
    if not words:
        return None
    if words[0] in _TRUE:
        return True
    if words[0] in _FALSE:
        return False
    return None
