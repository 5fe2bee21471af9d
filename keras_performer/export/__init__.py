"""SavedModel export for TensorFlow Serving (TensorFlow backend only).

Not imported by `import keras_performer`: `keras_performer.export` loads it
on first use.
"""

import keras

if keras.config.backend() != "tensorflow":
    raise ImportError(
        "keras_performer.export writes TensorFlow SavedModels: it needs the "
        "TensorFlow backend (KERAS_BACKEND=tensorflow). Received: "
        f"backend={keras.config.backend()}"
    )

from keras_performer.export import causal_lm  # noqa: E402
from keras_performer.export import text_classifier  # noqa: E402

export_causal_lm = causal_lm.export_causal_lm
export_text_classifier = text_classifier.export_text_classifier

__all__ = ["export_causal_lm", "export_text_classifier"]
