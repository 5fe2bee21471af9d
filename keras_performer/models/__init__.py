"""Models made of Performer blocks."""

from keras_performer.models.performer_causal_lm import PerformerCausalLM

__all__ = ["PerformerCausalLM"]
