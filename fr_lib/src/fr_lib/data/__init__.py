"""Face data: where it lives on disk, how faces are aligned, how records,
verification pairs and MNIST are read, how batches are sampled, and the
batch-source protocol the trainer pulls from (:mod:`fr_lib.data.source`)."""
from . import source, root, align, mnist, sampler, recordio, binfile, transforms, synthetic, tools
from .source import *  # noqa: F401,F403
from .root import *  # noqa: F401,F403
from .align import *  # noqa: F401,F403
from .mnist import *  # noqa: F401,F403
from .sampler import *  # noqa: F401,F403
from .recordio import *  # noqa: F401,F403
from .binfile import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403

__all__ = (source.__all__ + root.__all__ + align.__all__ + mnist.__all__ + sampler.__all__
           + recordio.__all__ + binfile.__all__ + transforms.__all__
           + synthetic.__all__)
# DALI itself is imported only when a DaliFaceIter is built (optional dependency).
from . import dali  # noqa: E402
from .dali import *  # noqa: F401,F403,E402

__all__ = __all__ + dali.__all__
