"""Backend-agnostic FAVOR math: projections, feature maps, attention forms."""

from keras_performer.ops.causal import DEFAULT_CHUNK_SIZE
from keras_performer.ops.causal import causal_favor_attention
from keras_performer.ops.causal import empty_state
from keras_performer.ops.exact import exact_attention
from keras_performer.ops.favor import attend_to_state
from keras_performer.ops.favor import favor_attention
from keras_performer.ops.favor import favor_attention_scores
from keras_performer.ops.favor import key_value_state
from keras_performer.ops.favor import masked_favor_attention
from keras_performer.ops.feature_maps import FEATURE_MAPS
from keras_performer.ops.feature_maps import POSITIVE_FEATURE_MAPS
from keras_performer.ops.feature_maps import num_features
from keras_performer.ops.feature_statistics import MOMENT_FEATURE_MAPS
from keras_performer.ops.feature_statistics import query_key_moments
from keras_performer.ops.projection import PROJECTION_NORMS
from keras_performer.ops.projection import sample_projection_matrix

__all__ = [
    "attend_to_state",
    "DEFAULT_CHUNK_SIZE",
    "FEATURE_MAPS",
    "MOMENT_FEATURE_MAPS",
    "POSITIVE_FEATURE_MAPS",
    "PROJECTION_NORMS",
    "causal_favor_attention",
    "empty_state",
    "exact_attention",
    "favor_attention",
    "favor_attention_scores",
    "key_value_state",
    "masked_favor_attention",
    "num_features",
    "query_key_moments",
    "sample_projection_matrix",
]
