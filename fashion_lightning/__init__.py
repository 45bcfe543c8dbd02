"""fashion_lightning: a reference PyTorch Lightning project for Fashion-MNIST.

Kept free of imports so that `fashion_lightning.reference` (NumPy only) loads without torch.
"""

__version__ = "0.1.0"
