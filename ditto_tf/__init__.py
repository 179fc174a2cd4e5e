"""ditto_tf: DITTO (offline imitation learning with world models) in TensorFlow 2 / Keras."""

__version__ = "0.1.0"
