"""LeNet++: shapes, parameter count from the architecture, hybridize = imperative."""
import mxnet as mx
import numpy as np
import pytest

from fr_lib.model_zoo import LeNetPlusPlus, get_model


def expected_params(embedding_size):
    # 5x5 convolutions 1->32->32, 32->64->64, 64->128->128 (+bias), one PReLU
    # slope each, 28 -> 14 -> 7 -> 3 after the pools, then FC 128*3*3 -> E.
    chans = [1, 32, 32, 64, 64, 128, 128]
    convs = sum(cin * cout * 25 + cout for cin, cout in zip(chans, chans[1:]))
    return convs + 6 + 128 * 3 * 3 * embedding_size + embedding_size


@pytest.mark.parametrize("embedding_size", [2, 3, 64])
def test_parameter_count_and_shape(embedding_size):
    net = get_model("lenetpp", embedding_size=embedding_size)
    net.initialize()
    out = net(mx.nd.zeros((4, 1, 28, 28)))
    assert out.shape == (4, embedding_size)
    count = sum(p.data().size for p in net.collect_params().values())
    assert count == expected_params(embedding_size)


def test_hybridized_equals_imperative():
    mx.random.seed(0)
    net = LeNetPlusPlus(embedding_size=2)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.normal(shape=(3, 1, 28, 28))
    imperative = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-5, atol=1e-6)


def test_bad_embedding_size():
    with pytest.raises(ValueError, match="embedding_size"):
        LeNetPlusPlus(embedding_size=0)
