"""The log monitor: tails a log through the C2SP tlog-tiles API, verifies every
checkpoint and entry, and reports alerts as JSON lines. See docs/client.md."""

from .alerts import ALL_KINDS, Alert
from .metrics import MonitorMetrics, serve_metrics
from .monitor import Monitor
from .state import STATE_FILE, MonitorState

__all__ = ["ALL_KINDS", "STATE_FILE", "Alert", "Monitor", "MonitorMetrics", "MonitorState", "serve_metrics"]
