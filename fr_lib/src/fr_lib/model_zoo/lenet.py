"""LeNet++: the small MNIST network whose 2-D features the loss chapters draw."""
from mxnet.gluon import nn

from . import register_model
from .layers import make_prelu

__all__ = ["LeNetPlusPlus", "lenetpp"]


class LeNetPlusPlus(nn.HybridBlock):
    """LeNet++ from the Center loss paper (Wen et al., ECCV 2016).

    Three stages of two 5x5 convolutions (32, 64, 128 channels, padding 2,
    PReLU with one slope per channel, as Caffe's default) each followed by 2x2 max pooling, then a fully connected layer to a
    low-dimensional embedding, so features can be plotted directly. Input is
    ``(N, 1, 28, 28)``; output ``(N, embedding_size)``.

    Parameters
    ----------
    embedding_size : int
        2 or 3 for plots; larger values work too.
    channels : tuple of 3 ints, default (32, 64, 128)
        Width of the three stages (the paper's). The book's quick mode uses
        a quarter of it, (8, 16, 32), which trains about 10x faster on a CPU.
    batch_norm : bool, default False
        Batch normalisation after every convolution (not in the paper). It
        makes 2-D embeddings train reliably with Adam in a few epochs.
    fast_prelu : bool, default True
        Use :class:`fr_lib.model_zoo.layers.PReLU` (same parameter, much
        faster backward on CPU) instead of ``nn.PReLU``.
    """

    def __init__(self, embedding_size=2, channels=(32, 64, 128), batch_norm=False,
                 fast_prelu=True, **kwargs):
        super().__init__(**kwargs)
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be 3 positive ints, got {channels}")
        self.embedding_size = embedding_size
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            for width in channels:
                for _ in range(2):
                    self.features.add(nn.Conv2D(width, 5, padding=2))
                    if batch_norm:
                        self.features.add(nn.BatchNorm())
                    self.features.add(make_prelu(width, fast=fast_prelu))
                self.features.add(nn.MaxPool2D(2, 2))
            self.embedding = nn.Dense(embedding_size)

    def hybrid_forward(self, F, x):
        return self.embedding(self.features(x))


@register_model("lenetpp")
def lenetpp(embedding_size=2, **kwargs):
    """LeNet++ for 28x28 grey digits (Wen et al. 2016, "A Discriminative Feature
    Learning Approach for Deep Face Recognition").

    Parameters
    ----------
    embedding_size : int
        Size of the embedding (2 for the book's feature plots).
    **kwargs
        ``channels``, ``batch_norm``, ``fast_prelu``: see :class:`LeNetPlusPlus`.
    """
    return LeNetPlusPlus(embedding_size=embedding_size, **kwargs)
