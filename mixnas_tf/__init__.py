"""mixnas_tf: where should a CNN downsample? Balanced mixture of SuperNets in Keras 3."""

__version__ = "0.1.2"
