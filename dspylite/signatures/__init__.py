"""Signatures, as ``dspy.signatures``: the implementation lives in ``dspylite.signatures.signature``."""

from dspylite.signatures.signature import (
    IS_TYPE_UNDEFINED,
    UNDEFINED,
    Field,
    InputField,
    OutputField,
    Signature,
    SignatureMeta,
    ensure_signature,
    infer_prefix,
    make_signature,
    type_name,
)

__all__ = [
    "IS_TYPE_UNDEFINED",
    "UNDEFINED",
    "Field",
    "InputField",
    "OutputField",
    "Signature",
    "SignatureMeta",
    "ensure_signature",
    "infer_prefix",
    "make_signature",
    "type_name",
]
