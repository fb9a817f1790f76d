"""Dynamic batching: pure merge/split/selection (batch.py) and the queue + compute thread."""
