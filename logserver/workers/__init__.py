"""`logserver serve --workers N`: the supervisor and forwarding to the one sequencer."""
