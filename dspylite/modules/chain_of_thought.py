"""ChainOfThought: Predict with a ``reasoning`` output field placed before the other outputs."""

from __future__ import annotations

from typing import Any

from dspylite.example import Prediction
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.signatures import OutputField, Signature, ensure_signature


class ChainOfThought(Module):
    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: Any = None,
        rationale_field_type: Any = str,
        **config: Any,
    ):
        signature = ensure_signature(signature)
        # No description, as in DSPy: saved states then match DSPy's ("${reasoning}") field for field.
        field = rationale_field or OutputField()
        # The inner predictor is named "predict", as in DSPy, so saved states line up.
        self.predict = Predict(signature.prepend("reasoning", field, rationale_field_type), **config)

    def forward(self, **kwargs: Any) -> Prediction:
        return self.predict(**kwargs)
