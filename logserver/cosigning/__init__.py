"""The log side of witnessing: asking the witnesses of a tlog-policy to cosign each
new checkpoint, and publishing checkpoints with their cosignatures (docs/witness.md)."""
from .policy import load_witness_policy
from .publisher import DirectPublisher, NotPublishedError, Publisher, WitnessedPublisher

__all__ = ["DirectPublisher", "NotPublishedError", "Publisher", "WitnessedPublisher", "load_witness_policy"]
