"""LeNet++: the small MNIST network whose 2-D features the loss chapters draw."""
from mxnet.gluon import nn

from . import register_model

__all__ = ["LeNetPlusPlus", "lenetpp"]


class LeNetPlusPlus(nn.HybridBlock):
    """LeNet++ from the Center loss paper (Wen et al., ECCV 2016).

    Three stages of two 5x5 convolutions (32, 64, 128 channels, padding 2,
    PReLU) each followed by 2x2 max pooling, then a fully connected layer to a
    low-dimensional embedding, so features can be plotted directly. Input is
    ``(N, 1, 28, 28)``; output ``(N, embedding_size)``.

    Parameters
    ----------
    embedding_size : int
        2 or 3 for plots; larger values work too.
    """

    def __init__(self, embedding_size=2, **kwargs):
        super().__init__(**kwargs)
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {embedding_size}")
        self.embedding_size = embedding_size
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            for channels in (32, 64, 128):
                for _ in range(2):
                    self.features.add(nn.Conv2D(channels, 5, padding=2),
                                      nn.PReLU())
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
    """
    return LeNetPlusPlus(embedding_size=embedding_size, **kwargs)
