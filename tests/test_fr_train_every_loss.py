"""Every registered loss through ``fr-train`` itself (the command's entry
point, in this process, on a tiny synthetic set): two iterations that leave
finite losses in the run's log, hybridized and not, on one and on two
contexts, or a refusal before anything is written, one line on stderr naming
the loss and the reason."""
import json
import math

import pytest

from fr_lib.loss import contract_of, get_loss_list
from fr_lib.recipes import train_main
from fr_lib.train.objective import objective_refusal

PK_K = 2
TINY = ["--full",
        "--set", "synthetic={num_identities: 8, images_per_identity: 4, "
                 "num_val_pairs: 0, difficulty: 0.3, seed: 0}",
        "--set", "train.backbone_kwargs={width: [4, 8, 8], embedding_size: 16}",
        "--set", "train.batch_size=8", "--set", "train.max_iters=2",
        "--set", "train.val_sets=[]",
        "--set", "train.checkpoint_every=0", "--set", "train.verify_every=0",
        "--set", "train.warmup_iters=0", "--set", "train.progress=false",
        "--set", "train.log_every=1", "--set", "train.loss_kwargs={}"]


def _pk(loss):
    return contract_of(loss).sampler == "pk" or contract_of(loss).consumes == "triplets"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("every-loss-data"))


def _cases():
    """(loss, hybridize, contexts): the four combinations for a loss that
    trains; one for a loss the objective layer refuses (the refusal does not
    depend on them)."""
    combos = [(True, 1), (False, 1), (True, 2), (False, 2)]
    for loss in get_loss_list():
        refused = objective_refusal(loss, pk=_pk(loss)) is not None
        for hybridize, contexts in combos[:1] if refused else combos:
            yield pytest.param(loss, hybridize, contexts,
                               id=f"{loss}-{'hybrid' if hybridize else 'eager'}-{contexts}ctx")


@pytest.mark.parametrize("loss, hybridize, contexts", list(_cases()))
def test_fr_train_trains_or_refuses_every_loss(loss, hybridize, contexts, data_root,
                                               tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FR_DATA_ROOT", data_root)
    out = tmp_path / "run"
    ctx = [f"cpu({i})" for i in range(contexts)]
    argv = ["quick-synthetic", *TINY, "--set", f"train.loss={loss}",
            "--set", f"train.hybridize={str(hybridize).lower()}",
            "--set", f"train.ctx={ctx}", "--out", str(out)]
    if _pk(loss):
        argv += ["--set", f"train.pk_k={PK_K}"]
    why = objective_refusal(loss, pk=_pk(loss))
    rc = train_main(argv)
    err = capsys.readouterr().err
    if why is not None:
        assert rc == 2, f"{loss}: refused by the objective layer, but fr-train ran"
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("fr-train: error: "), err
        assert f"'{loss}'" in lines[0] and why in lines[0]
        assert not (out / "log.jsonl").exists()
        return
    assert rc == 0, f"{loss}: fr-train failed:\n{err}"
    with open(out / "log.jsonl") as f:
        records = [json.loads(line) for line in f]
    steps = [r for r in records if r.get("event") == "train"]
    assert [r["iteration"] for r in steps] == [1, 2], records
    assert all(math.isfinite(r["loss"]) for r in steps), steps
    config = records[0]["config"]
    assert config["loss"] == loss and config["hybridize"] is hybridize
    assert len(config["ctx"]) == contexts, config["ctx"]
