"""Signatures, as ``dspy.signatures``: the implementation lives in ``dspylite.signatures.signature``."""

from dspylite.signatures.signature import (
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
