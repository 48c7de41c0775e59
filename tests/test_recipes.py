"""YAML recipes and the fr-train command line (fr_lib.recipes)."""
import os
import subprocess
import sys

import pytest

from fr_lib import recipes


def test_every_shipped_recipe_resolves_in_both_modes():
    names = recipes.list_recipes()
    assert {"quick-synthetic", "emore-mobilefacenet-arcface",
            "emore-iresnet50-arcface", "emore-iresnet100-arcface"} <= set(names)
    for name in names:
        for quick in (False, True):
            r = recipes.load_recipe(name, quick=quick)
            assert r["train"]["backbone"] and r["train"]["max_iters"] > 0
            assert r.get("published"), f"{name}: say what it should reproduce"


def test_published_setting_of_the_gluonface_recipe():
    r = recipes.load_recipe("emore-mobilefacenet-arcface", quick=False)["train"]
    # gluon-face's script: 8 GPUs, batch 1760, lr 0.35, 86k iterations with a
    # 35k softmax warm-up, ArcFace s=64 m=0.5, 128-d
    assert (r["num_gpus"], r["batch_size"], r["lr"], r["max_iters"],
            r["loss_warmup_iters"]) == (8, 1760, 0.35, 86000, 35000)
    assert r["loss_kwargs"] == {"s": 64.0, "m": 0.5}
    assert r["backbone_kwargs"]["embedding_size"] == 128
    quick = recipes.load_recipe("emore-mobilefacenet-arcface", quick=True)["train"]
    assert quick["max_iters"] < 100 and quick["backbone"] == "mobilefacenet"


def test_overrides_are_parsed_as_yaml():
    r = recipes.load_recipe("quick-synthetic", quick=False,
                            overrides=["train.lr=0.05", "train.lr_steps=[10, 20]",
                                       "train.backbone_kwargs.embedding_size=32",
                                       "synthetic.difficulty=0.7"])
    assert r["train"]["lr"] == 0.05 and r["train"]["lr_steps"] == [10, 20]
    assert r["train"]["backbone_kwargs"] == {"width": [16, 32, 64], "embedding_size": 32}
    assert r["synthetic"]["difficulty"] == 0.7


@pytest.mark.parametrize("bad, message", [
    ("train.lr", "expected section.key=value"),
    ("lr=0.1", "must start with one of"),
    ("model.lr=0.1", "must start with one of"),
])
def test_bad_override(bad, message):
    with pytest.raises(ValueError, match=message):
        recipes.load_recipe("quick-synthetic", overrides=[bad])


def test_unknown_training_option_names_the_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"r\.yaml.*learning_rate"):
        recipes.load_recipe(str(p))
    p.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ValueError, match=r"r\.yaml.*unknown section.*trian"):
        recipes.load_recipe(str(p))
    p.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match=r"r\.yaml.*mapping"):
        recipes.load_recipe(str(p))
    with pytest.raises(FileNotFoundError, match="quick-synthetic"):
        recipes.load_recipe("no-such-recipe")


def test_data_root_placeholder(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path))
    r = recipes.load_recipe("quick-synthetic", quick=False,
                            overrides=["synthetic=null"])
    assert recipes.prepare_data(r) == os.path.join(str(tmp_path), "synthetic-quick")


def test_command_line_dry_run_and_errors():
    cmd = [sys.executable, "-m", "fr_lib.recipes"]
    out = subprocess.run(cmd + ["quick-synthetic", "--dry-run", "--full",
                                "--set", "train.lr=0.025"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lr: 0.025" in out.stdout and "max_iters: 400" in out.stdout
    out = subprocess.run(cmd + ["quick-synthetic", "--set", "train.nope=1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "nope" in out.stderr


def test_quick_recipe_trains_from_the_command_line(tmp_path):
    """fr-train on synthetic identities ends well above chance (50 %)."""
    import json
    env = dict(os.environ, FR_DATA_ROOT=str(tmp_path / "data"), OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-m", "fr_lib.recipes", "quick-synthetic", "--full",
         "--out", str(tmp_path / "run"),
         "--set", "synthetic={num_identities: 40, images_per_identity: 10, "
                  "num_val_pairs: 400, difficulty: 0.3, seed: 0}",
         "--set", "train.max_iters=100", "--set", "train.verify_every=50",
         "--set", "train.checkpoint_every=50", "--set", "train.batch_size=32",
         "--set", "train.progress=false"],
        capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best verification accuracy" in out.stdout
    verify = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")
              if '"verify"' in line]
    assert [v["iteration"] for v in verify] == [50, 100]
    best = max(v["metric"] for v in verify)
    assert best > 0.65, verify
    assert (tmp_path / "run" / "checkpoints").is_dir()

    # fr-eval and fr-export on the run just trained
    from fr_lib import cli
    bin_path = str(tmp_path / "data" / "synthetic-quick" / "synth_val.bin")
    env_eval = subprocess.run(
        [sys.executable, "-c", "import sys; from fr_lib.cli import eval_main; "
         "sys.exit(eval_main(sys.argv[1:]))", str(tmp_path / "run"), "--bins", bin_path],
        capture_output=True, text=True, timeout=300, env=env)
    assert env_eval.returncode == 0, env_eval.stderr[-2000:]
    row = next(l for l in env_eval.stdout.splitlines() if l.startswith("synth_val"))
    acc = float(row.split()[2])
    assert abs(acc / 100 - best) < 0.03, (row, best)   # same protocol, same params
    assert cli.export_main([str(tmp_path / "run"), "--out", str(tmp_path / "exp" / "m")]) == 0
    net, config, _ = cli.load_run(str(tmp_path / "run"))
    from fr_lib.deploy import load_exported
    import mxnet as mx
    x = mx.nd.random.uniform(-1, 1, shape=(2, 3, 112, 112))
    diff = (load_exported(str(tmp_path / "exp" / "m"))(x) - net(x)).abs().max()
    assert float(diff.asscalar()) < 1e-5
    assert cli.eval_main([str(tmp_path / "nowhere"), "--bins", bin_path]) == 2


@pytest.mark.parametrize("override, message", [
    ("train.data_source=lmdb", "train.data_source: 'lmdb' is not 'record'"),
    ("train.data_source=dali", None),
])
def test_data_source_is_checked_before_the_run(override, message):
    recipe = recipes.load_recipe("quick-synthetic", overrides=[override], quick=True)
    if message is None:
        recipes.check_recipe(recipe)
        return
    with pytest.raises(ValueError, match=message):
        recipes.check_recipe(recipe)
    recipe["train"]["data_source"] = "dali"
    recipe["train"]["pk_k"] = 2
    with pytest.raises(ValueError, match="'dali' does not draw P x K"):
        recipes.check_recipe(recipe)


def test_a_short_run_with_the_default_warm_up_is_refused_before_anything_is_made(
        tmp_path, monkeypatch, capsys):
    """The usual smoke-test mistake: max_iters=2 with the recipe's 20 warm-up
    iterations of a cosine schedule. fr-train names the options before it
    renders any data; a warm-up inside the run, or a schedule that does not
    decay, is accepted."""
    from fr_lib.recipes import train_main
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path / "data"))
    rc = train_main(["quick-synthetic", "--set", "train.max_iters=2",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("fr-train: error: ") and "train.lr_mode: the 'cosine' " \
        "schedule refuses max_iters=2, warmup_iters=20" in err[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    for ok in (["train.max_iters=2", "train.warmup_iters=1"],
               ["train.max_iters=2", "train.lr_mode=step"]):
        recipe = recipes.load_recipe("quick-synthetic", overrides=ok, quick=True)
        recipes.check_recipe(recipe)
    recipe = recipes.load_recipe("quick-synthetic", quick=True,
                                 overrides=["train.max_iters=20", "train.lr_mode=poly"])
    with pytest.raises(ValueError, match="'poly' schedule refuses max_iters=20, "
                                         "warmup_iters=20"):
        recipes.check_recipe(recipe)


def test_dry_run_prints_the_settings_then_the_problems_of_this_machine(tmp_path,
                                                                        monkeypatch):
    """A recipe for 8 GPUs checked on a machine without them (or its data):
    the resolved settings on stdout, the problems on stderr, exit 2; a recipe
    this machine can run: exit 0 and no stderr."""
    env = dict(os.environ, FR_DATA_ROOT=str(tmp_path / "data"))
    cmd = [sys.executable, "-m", "fr_lib.recipes", "--dry-run", "--full"]
    out = subprocess.run(cmd + ["emore-mobilefacenet-arcface",
                                "--set", "train.num_gpus=99"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out
    assert "  batch_size: 1760\n" in out.stdout and "  num_gpus: 99\n" in out.stdout
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fr-train: error: ") and \
        "train.num_gpus: asked for 99 GPU(s)" in err[0] and "train.data: " in err[0]
    assert not (tmp_path / "data").exists()
    out = subprocess.run(cmd + ["quick-synthetic"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and out.stderr == "" and "max_iters: 400" in out.stdout


def test_a_gpu_context_this_machine_cannot_use_is_refused_up_front(tmp_path,
                                                                   monkeypatch):
    """train.ctx=['gpu(0)'] used to fail with MXNet's bare 'GPU is not
    enabled' after the synthetic data had been rendered."""
    from fr_lib.utils.device import list_gpus
    if list_gpus():
        pytest.skip("this machine has a usable GPU")
    recipe = recipes.load_recipe("quick-synthetic", quick=True,
                                 overrides=["train.ctx=['gpu(0)']"])
    with pytest.raises(ValueError, match=r"train.ctx: \['gpu\(0\)'\] cannot be used "
                                         r"here: usable GPUs \[\]"):
        recipes.check_recipe(recipe)
    recipe = recipes.load_recipe("quick-synthetic", quick=True,
                                 overrides=["train.ctx=['cpu(0)', 'cpu(1)']"])
    recipes.check_recipe(recipe)
