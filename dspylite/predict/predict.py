"""DSPy path ``dspy.predict.predict``: ``Predict``, its ``logger`` and ``serialize_object``."""

from dspylite.modules.predict import UNSAFE_LM_STATE_KEYS, Predict, logger, serialize_object

__all__ = ["UNSAFE_LM_STATE_KEYS", "Predict", "logger", "serialize_object"]
