"""Optimizer building blocks beyond torch's own, for airbench's methods (KellerJordan/cifar10-airbench):
parameter groups with their own learning rate, Muon for conv weights, Lookahead. `build.py` puts
them together from the module's options; each piece is a plain torch optimizer, so Lightning's
automatic optimization, precision plugins, schedulers and checkpoints treat it as any other."""
