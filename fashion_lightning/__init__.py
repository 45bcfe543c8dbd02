"""fashion_lightning: a reference PyTorch Lightning project for Fashion-MNIST.

Free of heavy imports so that `fashion_lightning.reference` (NumPy only) loads without torch;
`moved` keeps the module paths of earlier versions importable, for old checkpoints and configs.
"""

from fashion_lightning import moved

__version__ = "0.1.0"
moved.install()
