"""ChainOfThought: Predict with a ``reasoning`` output field placed before the other outputs."""

from __future__ import annotations

from typing import Any

from dspylite.example import Prediction
from dspylite.modules.module import Module
from dspylite.modules.predict import Predict
from dspylite.signatures import OutputField, Signature, ensure_signature


class ChainOfThought(Module):
    """DSPy's ``ChainOfThought(signature, rationale_field=None, rationale_field_type=str, **config)``;
    ``**config`` goes to the inner ``Predict``, named ``predict`` as in DSPy so saved states line up."""

    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: Any = None,
        rationale_field_type: Any = str,
        **config: Any,
    ):
        super().__init__()
        signature = ensure_signature(signature)
        if rationale_field is not None and getattr(rationale_field, "annotation", None) is not None:
            rationale_field_type = rationale_field.annotation
        # "${reasoning}" is what DSPy saves for this field's description; states then match field for field.
        field = rationale_field or OutputField(desc="${reasoning}")
        self.predict = Predict(signature.prepend("reasoning", field, rationale_field_type), **config)

    def forward(self, **kwargs: Any) -> Prediction:
        return self.predict(**kwargs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        return await self.predict.acall(**kwargs)
