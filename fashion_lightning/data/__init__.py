"""Fashion-MNIST in: the IDX files (`idx`, NumPy only), photos as 28x28 images (`photos`),
photometric augmentation (`photometric`) and the Lightning DataModule (`datamodule`).

`fashion_lightning.data.FashionMNISTDataModule`, the class path configs and checkpoints record,
resolves here without importing torch for `idx`'s sake (the NumPy reference imports `data.idx`).
"""

from fashion_lightning.moved import forward_attributes

__getattr__ = forward_attributes("fashion_lightning.data.datamodule")
