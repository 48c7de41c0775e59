"""The loss contract (issue 16, item 1): every registered loss declares what it
consumes; FaceTrainer/fr-train either trains it or refuses it when built, naming
the loss and the reason (so does recipes.check_recipe, i.e. fr-train --dry-run)."""
import os
import sys

import numpy as np
import pytest

from fr_lib.loss import LOSSES, LossContract, contract_of, get_loss_list
from fr_lib.train import ArrayBatches, FaceTrainer
from fr_lib.train.trainer import loss_refusal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_helper  # noqa: E402

TRAINABLE = [n for n in get_loss_list() if loss_refusal(n) is None]
REFUSED = [n for n in get_loss_list() if loss_refusal(n) is not None]


def test_every_registered_loss_declares_a_contract():
    for name in get_loss_list():
        c = contract_of(name)
        assert isinstance(c, LossContract), name
        cls = LOSSES.lookup(name)
        if cls.__module__.startswith("fr_lib"):
            assert cls.contract == c, name
    assert contract_of("magface").extra_inputs == ("norm",)
    assert contract_of("subcenter_arcface").head_k_arg == "k"
    assert contract_of("triplet").sampler == "pk"
    assert contract_of("center").needs_num_classes
    with pytest.raises(ValueError, match="consumes must be one of"):
        LossContract("pixels")


def _trainer(tmp_path, loss, hybridize, contexts):
    X, y = train_helper.make_data(per_class=4)
    cfg = train_helper.config(str(tmp_path), 2, loss=loss, loss_kwargs={},
                              loss_warmup_iters=0, warmup_iters=0, batch_size=8,
                              checkpoint_every=0, hybridize=hybridize,
                              contexts=contexts)
    return FaceTrainer(cfg, ArrayBatches(X, y, 8, seed=1),
                       backbone=train_helper.make_mlp(0.0))


@pytest.mark.parametrize("contexts", [["cpu(0)"], ["cpu(0)", "cpu(1)"]])
@pytest.mark.parametrize("hybridize", [True, False])
@pytest.mark.parametrize("loss", TRAINABLE)
def test_trainable_losses_train_two_iterations(tmp_path, loss, hybridize, contexts):
    trainer = _trainer(tmp_path, loss, hybridize, contexts)
    trainer.fit(1)  # parameters exist after the first step
    before = {k: v.data(trainer.contexts[0]).asnumpy().copy()
              for k, v in trainer.params.items()}
    trainer.fit(2)
    records = trainer.history if hasattr(trainer, "history") else None
    changed = [k for k, v in trainer.params.items()
               if not np.array_equal(v.data(trainer.contexts[0]).asnumpy(), before[k])]
    assert changed, f"{loss}: no parameter changed"
    for v in trainer.params.values():
        assert np.isfinite(v.data(trainer.contexts[0]).asnumpy()).all(), loss
    del records


@pytest.mark.parametrize("loss", REFUSED)
def test_refused_losses_are_refused_when_built(tmp_path, loss):
    with pytest.raises(ValueError, match=f"loss '{loss}' cannot be trained") as err:
        _trainer(tmp_path, loss, True, ["cpu(0)"])
    assert contract_of(loss).trainer_refusal() in str(err.value)


def test_check_recipe_reports_the_refusal():
    from fr_lib.recipes import check_recipe, load_recipe
    recipe = load_recipe("quick-synthetic")
    recipe["train"]["loss"], recipe["train"]["loss_kwargs"] = "triplet", {}
    with pytest.raises(ValueError, match=r"train\.loss: loss 'triplet' cannot be "
                                         r"trained .*metric loss"):
        check_recipe(recipe)
