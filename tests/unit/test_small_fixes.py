"""Issue 14, item 6 (library parts): signature type expressions that used to raise raw
AttributeError/TypeError, and adapter names with a trailing newline."""

from __future__ import annotations

import pytest

from dspylite.errors import AdapterRegistryError, SignatureError
from dspylite.signatures import make_signature
from serving.registry import AdapterRegistry, validate_name


@pytest.mark.parametrize(
    "type_text", ["str.nope", "int[str]", "Optional[int, str]", "Any[int]", "list[str][int]", "str.__class__"]
)
def test_bad_type_expressions_are_signature_errors_naming_the_field(type_text: str) -> None:
    with pytest.raises(SignatureError, match=r"field 'answer' of signature") as info:
        make_signature(f"question -> answer: {type_text}")
    assert type_text in str(info.value)


def test_good_type_expressions_still_build() -> None:
    sig = make_signature("question: str, k: int -> answer: Optional[list[str]], score: float | None")
    assert list(sig.output_fields) == ["answer", "score"]


@pytest.mark.parametrize("name", ["run-1\n", "run-1\n\n", "\nrun-1"])
def test_adapter_names_with_a_newline_are_refused(name: str, tmp_path) -> None:
    with pytest.raises(AdapterRegistryError, match="invalid adapter name"):
        validate_name(name)
    validate_name(name.strip())  # the same name without it is fine


def test_next_version_ignores_names_with_a_trailing_newline(tmp_path) -> None:
    registry = AdapterRegistry(tmp_path)
    entries = {"run-7\n": object(), "run-2": object()}
    assert registry._next_name_locked(entries, "run") == "run-3"
