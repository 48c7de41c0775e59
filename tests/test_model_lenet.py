"""LeNet++: shapes, parameter count from the architecture, hybridize = imperative."""
import mxnet as mx
import numpy as np
import pytest

from fr_lib.model_zoo import LeNetPlusPlus, get_model


def expected_params(embedding_size):
    # 5x5 convolutions 1->32->32, 32->64->64, 64->128->128 (+bias), PReLU
    # slopes per channel, 28 -> 14 -> 7 -> 3 after the pools, then FC 128*3*3 -> E.
    chans = [1, 32, 32, 64, 64, 128, 128]
    convs = sum(cin * cout * 25 + cout for cin, cout in zip(chans, chans[1:]))
    return convs + sum(chans[1:]) + 128 * 3 * 3 * embedding_size + embedding_size


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


def test_narrow_batchnorm_variant_and_prelu_choice():
    net = get_model("lenetpp", embedding_size=3, channels=(8, 16, 32), batch_norm=True)
    net.initialize()
    assert net(mx.nd.zeros((2, 1, 28, 28))).shape == (2, 3)
    chans = [1, 8, 8, 16, 16, 32, 32]
    convs = sum(cin * cout * 25 + cout for cin, cout in zip(chans, chans[1:]))
    bn = 4 * sum(chans[1:])          # gamma, beta, running mean and var
    count = sum(p.data().size for p in net.collect_params().values())
    assert count == convs + bn + sum(chans[1:]) + 32 * 3 * 3 * 3 + 3
    # the fast PReLU and gluon's give the same function for the same weights
    fast, slow = LeNetPlusPlus(fast_prelu=True), LeNetPlusPlus(fast_prelu=False)
    fast.initialize(mx.init.Xavier())
    slow.initialize()
    x = mx.nd.random.normal(shape=(2, 1, 28, 28))
    fast(x), slow(x)  # finish deferred initialisation
    for pf, ps in zip(fast.collect_params().values(), slow.collect_params().values()):
        ps.set_data(pf.data())
    np.testing.assert_allclose(fast(x).asnumpy(), slow(x).asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        LeNetPlusPlus(channels=(8, 16))


def test_lenetpp_exports_and_reloads(tmp_path):
    import warnings
    import mxnet as mx
    import numpy as np
    from fr_lib.model_zoo import get_model
    for name in [n for n in __import__("fr_lib").model_zoo.get_model_list()
                 if n.startswith("lenet")]:
        net = get_model(name, embedding_size=3)
        net.initialize()
        net.hybridize()
        x = mx.nd.random.uniform(0, 1, shape=(2, 1, 28, 28))
        out = net(x)
        prefix = str(tmp_path / name)
        net.export(prefix)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                                  prefix + "-0000.params")
        np.testing.assert_allclose(loaded(x).asnumpy(), out.asnumpy(), rtol=1e-5,
                                   atol=1e-6)
