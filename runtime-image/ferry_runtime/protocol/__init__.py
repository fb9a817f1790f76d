"""Open Inference Protocol v2: types, tensor codecs and the error table.

Nothing here imports torch: transports use this package directly.
"""
