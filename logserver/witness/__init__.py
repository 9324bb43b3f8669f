"""`logserver witness`: a C2SP tlog-witness server (docs/witness.md)."""
from .app import create_witness_app
from .config import WitnessConfig, load_witness_config
from .cosigner import Cosigner

__all__ = ["Cosigner", "WitnessConfig", "create_witness_app", "load_witness_config"]
