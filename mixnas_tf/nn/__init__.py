"""Networks: stacked weight sets, downsampling ops, blocks, the switchable ResNet.

stacked.py (layers with K weight sets), ops.py (the downsampling-op registry),
blocks.py (stem, basic and bottleneck blocks, head: one forward pass each),
interpret.py (run / export / count that forward pass), network.py (SwitchableResNet),
diffstride.py (the learnable-stride layer).
"""
