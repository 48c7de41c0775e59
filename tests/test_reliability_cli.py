"""Issue 15, the command-line side: each reported failure, reproduced as a test.

fr-eval / fr-export verify checkpoints and need no log; recipe values are
typed by the schema; every tool fails with one line and exit code 2; exports
are written whole or not at all; an empty .bin is named; the launcher stops
its whole cluster on SIGTERM and notices a stopped worker.
"""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from fr_lib import cli, recipes
from fr_lib.data.binfile import read_bin

TINY = ["--set", "synthetic={num_identities: 6, images_per_identity: 4, "
                 "num_val_pairs: 20, seed: 0}",
        "--set", "train.max_iters=4", "--set", "train.verify_every=2",
        "--set", "train.checkpoint_every=2", "--set", "train.batch_size=8",
        "--set", "train.ctx=['cpu(0)']", "--set", "train.progress=false",
        "--set", "train.val_batch_size=16", "--set", "train.warmup_iters=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny fr-train run (in-process): its out_dir and its .bin."""
    base = tmp_path_factory.mktemp("rel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FR_DATA_ROOT", str(base / "data"))
        # as under the launcher: fr-train touches the heartbeat file while training
        mp.setenv("FR_HEARTBEAT_FILE", str(base / "heartbeat"))
        rc = recipes.train_main(["quick-synthetic", "--full", "--out",
                                 str(base / "run")] + TINY)
    assert rc == 0
    assert (base / "heartbeat").exists()
    return str(base / "run"), str(base / "data" / "synthetic-quick" / "synth_val.bin")


def _copy(run_dir, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(run_dir, dst)
    return dst


def _one_line_error(err, prog):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- 1. checksums are verified before loading; the config comes from meta.json ---------
def test_corrupt_best_params_are_refused_by_eval_and_export(run, tmp_path, capsys):
    run_dir, bin_path = run
    run_dir = _copy(run_dir, tmp_path)
    assert cli.eval_main([run_dir, "--bins", bin_path]) == 0
    capsys.readouterr()
    best = [d for d in os.listdir(os.path.join(run_dir, "checkpoints"))
            if d.startswith("best-")]
    assert len(best) == 1
    params = os.path.join(run_dir, "checkpoints", best[0], "backbone.params")
    size = os.path.getsize(params)
    assert size > 5000
    with open(params, "r+b") as f:          # 4,000 bytes overwritten, same size
        f.seek(1000)
        f.write(os.urandom(4000))
    assert os.path.getsize(params) == size

    assert cli.eval_main([run_dir, "--bins", bin_path]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-eval")
    assert params in line and "checksum" in line

    out = tmp_path / "exp"
    assert cli.export_main([run_dir, "--out", str(out / "m")]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-export")
    assert params in line
    assert not out.exists()                                 # nothing exported


def test_eval_without_the_log_reads_the_config_from_meta_json(run, tmp_path, capsys):
    run_dir, bin_path = run
    net0, config0, params0 = cli.load_run(run_dir)
    run_dir = _copy(run_dir, tmp_path)
    os.remove(os.path.join(run_dir, "log.jsonl"))
    net, config, params = cli.load_run(run_dir)
    assert config == config0 and os.path.basename(params) == os.path.basename(params0)
    assert cli.eval_main([run_dir, "--bins", bin_path]) == 0
    assert "synth_val" in capsys.readouterr().out
    # the checkpoint folder is read, never changed (a running save's temporaries stay)
    tmp = os.path.join(run_dir, "checkpoints", ".tmp-ckpt-000000099-x")
    os.mkdir(tmp)
    cli.load_run(run_dir, which="last")
    assert os.path.isdir(tmp)


def test_params_that_do_not_fit_the_config_are_one_line(run, tmp_path, capsys):
    import json
    run_dir, bin_path = run
    run_dir = _copy(run_dir, tmp_path)
    ckpts = os.path.join(run_dir, "checkpoints")
    for name in os.listdir(ckpts):         # the config now says 16-d embeddings
        meta_path = os.path.join(ckpts, name, "meta.json")
        meta = json.load(open(meta_path))
        if meta["state"].get("config"):
            meta["state"]["config"]["backbone_kwargs"]["embedding_size"] = 16
            json.dump(meta, open(meta_path, "w"))
    assert cli.eval_main([run_dir, "--bins", bin_path]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-eval")
    assert "backbone.params: not the parameters of the backbone 'quickfacenet'" in line


def test_missing_run_is_one_line(tmp_path, capsys):
    assert cli.eval_main([str(tmp_path / "nowhere"), "--bins", "x.bin"]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-eval")
    assert "nowhere" in line


# -- 4. outputs whole or not at all; an empty .bin is named ----------------------------
def test_export_to_an_unwritable_path_is_one_line(run, tmp_path, capsys):
    run_dir, _ = run
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.export_main([run_dir, "--out", str(blocker / "sub" / "m")]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-export")
    assert str(blocker) in line
    # a folder as --out: refused, nothing written beside it
    folder = tmp_path / "exported"
    folder.mkdir()
    for out in (str(folder), str(folder) + os.sep):
        assert cli.export_main([run_dir, "--out", out]) == 2
        assert "is a folder" in _one_line_error(capsys.readouterr().err, "fr-export")
    assert sorted(os.listdir(tmp_path)) == ["exported", "file"]
    assert os.listdir(folder) == []


def test_failed_onnx_export_leaves_nothing(run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    run_dir, _ = run
    out = tmp_path / "exp"
    from fr_lib import deploy

    def failing(prefix, path, **kwargs):
        with open(path, "wb") as f:          # a partial file, then the failure
            f.write(b"partial")
        raise ValueError("simulated ONNX exporter failure")

    monkeypatch.setattr(deploy, "export_onnx", failing)
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    assert cli.export_main([run_dir, "--out", str(out / "m"),
                            "--onnx", str(out / "onnx" / "m.onnx")]) == 2
    assert "simulated" in _one_line_error(capsys.readouterr().err, "fr-export")
    # no symbol/params, no .onnx, no temporary folder, no folder made for them
    assert os.listdir(out) == ["keep.txt"]
    # an ONNX target under a file: refused before anything is written
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.export_main([run_dir, "--out", str(out / "new" / "m"),
                            "--onnx", str(blocker / "m.onnx")]) == 2
    assert str(blocker) in _one_line_error(capsys.readouterr().err, "fr-export")
    assert os.listdir(out) == ["keep.txt"]
    # and when everything works, all three files are there
    assert cli.export_main([run_dir, "--out", str(out / "m"),
                            "--onnx", str(out / "m.onnx")]) == 0
    assert sorted(os.listdir(out)) == ["keep.txt", "m-0000.params", "m-symbol.json",
                                       "m.onnx"]


def test_export_model_writes_both_files_or_neither(tmp_path, monkeypatch):
    from fr_lib import deploy
    from fr_lib.model_zoo import get_model
    net = get_model("quickfacenet")
    net.initialize()
    export = type(net).export

    def disk_full(self, path, epoch=0, **kwargs):   # the symbol written, then ENOSPC
        export(self, path, epoch)
        os.remove(f"{path}-{epoch:04d}.params")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(net), "export", disk_full)
    with pytest.raises(OSError, match="No space"):
        deploy.export_model(net, str(tmp_path / "m"))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    assert deploy.export_model(net, str(tmp_path / "m")) == str(tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == ["m-0000.params", "m-symbol.json"]


def test_empty_bin_is_named(tmp_path, run, capsys):
    path = tmp_path / "empty.bin"
    with open(path, "wb") as f:
        pickle.dump(([], []), f)
    with pytest.raises(ValueError, match=r"empty\.bin.*no pairs"):
        read_bin(str(path))
    zero = tmp_path / "zero.bin"
    zero.write_bytes(b"")
    with pytest.raises(ValueError, match=r"zero\.bin: not a readable \.bin"):
        read_bin(str(zero))
    assert cli.eval_main([run[0], "--bins", str(path)]) == 2
    assert str(path) in _one_line_error(capsys.readouterr().err, "fr-eval")


# -- 2. recipe values typed by the schema ----------------------------------------------
def test_numbers_are_numbers_whatever_yaml_1_1_thinks(tmp_path):
    r = recipes.load_recipe("quick-synthetic", quick=False,
                            overrides=["train.lr=1e-3", "train.max_iters=1e2",
                                       "train.batch_size='32'",
                                       "train.lr_steps=[1e2, 200]",
                                       "train.progress=no"])
    t = r["train"]
    assert t["lr"] == 0.001 and type(t["lr"]) is float
    assert t["max_iters"] == 100 and type(t["max_iters"]) is int
    assert t["batch_size"] == 32 and t["lr_steps"] == [100, 200]
    assert t["progress"] is False
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lr: 5e-2\n  wd: 1E-4\n  data: /x\n")
    t = recipes.load_recipe(str(p))["train"]
    assert (t["lr"], t["wd"]) == (0.05, 0.0001)
    # the schedule accepts what the recipe produced (it failed with a string)
    from fr_lib.train.schedule import make_schedule
    make_schedule("cosine", t["lr"], max_update=10)(5)


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=sixteen", "train.batch_size: expected an integer, got 'sixteen'"),
    ("train.batch_size=12.5", "train.batch_size: expected an integer, got 12.5"),
    ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
    ("train.hybridize=maybe", "train.hybridize: expected true or false, got 'maybe'"),
    ("train.lr_steps=5", "train.lr_steps: expected a list"),
    ("train.backbone_kwargs=3", "train.backbone_kwargs: expected a mapping"),
    ("synthetic.num_identitiez=5",
     "synthetic.num_identitiez: unknown argument of write_dataset; did you mean "
     "'num_identities'"),
    ("train.learning_rate=0.1", "train.learning_rate: unknown training option"),
    ("synthetic={seed:1}", "write 'seed: 1' (YAML needs a space after the colon)"),
    ("train=5", "train: expected a mapping of training options"),
    ("synthetic=7", "synthetic: expected a mapping"),
    ("train.lr.x=1", "train.lr is not a section"),
    ("train.lr=[1", "not valid YAML"),
])
def test_bad_values_name_the_option_and_the_type(override, message):
    with pytest.raises(ValueError) as info:
        recipes.load_recipe("quick-synthetic", quick=False, overrides=[override])
    assert message in str(info.value)


def test_dry_run_checks_what_the_run_would(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FR_DATA_ROOT", str(tmp_path / "data"))
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--set",
                               "train.lr=1e-3"]) == 0
    assert "lr: 0.001" in capsys.readouterr().out
    for override, message in [
            ("synthetic.num_identitiez=5", "did you mean 'num_identities'"),
            ("train.loss=arcfac", "train.loss: unknown loss 'arcfac'"),
            ("train.backbone_kwargs={widht: [8]}", "train.backbone_kwargs: "
                                                   "'quickfacenet' refuses {'widht'"),
            ("train.loss_kwargs={s: 64, mm: 0.5}", "train.loss_kwargs: 'arcface' "
                                                   "refuses {'s': 64, 'mm': 0.5}"),
            ("train.lr_mode=cosin", "train.lr_mode: unknown schedule"),
            ("train.optimizer=sgdd", "train.optimizer: unknown optimizer 'sgdd'"),
            ("train.best_metric=lfw", "train.best_metric: 'lfw' is not one of"),
            ("train.amp=float16", "train.amp: 'float16' needs GPU contexts"),
            ("train.kvstore=null", "train.kvstore: null works with one context only"),
            ("train.resume=ckpt-000000070", "train.resume: ckpt-000000070: no such")]:
        assert recipes.train_main(["quick-synthetic", "--dry-run", "--set",
                                   override]) == 2, override
        assert message in _one_line_error(capsys.readouterr().err, "fr-train"), override
    # files that must exist: no synthetic section to write train.data
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--set",
                               "synthetic=null"]) == 2
    line = _one_line_error(capsys.readouterr().err, "fr-train")
    assert "train.data:" in line and "synthetic-quick" in line
    assert "train.val_sets" in line
    # an out_dir that holds another run (the trainer refuses to mix them)
    used = tmp_path / "used"
    (used / "checkpoints" / "ckpt-000000010").mkdir(parents=True)
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--out", str(used)]) == 2
    assert "already holds a training run" in \
        _one_line_error(capsys.readouterr().err, "fr-train")
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--out", str(used),
                               "--set", "train.resume=true"]) == 0
    # a worker of a distributed run may find rank 0's new run there already
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--out", str(used),
                               "--set", "train.kvstore=dist_sync"]) == 0
    capsys.readouterr()
    # an out_dir that cannot be created
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert recipes.train_main(["quick-synthetic", "--dry-run", "--out",
                               str(blocker / "run")]) == 2
    assert "train.out_dir" in _one_line_error(capsys.readouterr().err, "fr-train")


# -- 3. one line and rc=2; tracebacks only with --debug --------------------------------
def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="batch_size"):
        recipes.train_main(["quick-synthetic", "--dry-run", "--debug",
                            "--set", "train.batch_size=sixteen"])

    @cli.run_main("tool")
    def buggy(argv=None):
        return {}["missing"]

    assert buggy([]) == 1          # a bug: one line, exit code 1
    err = capsys.readouterr().err
    assert err.startswith("tool: internal error: KeyError") and "--debug" in err
    with pytest.raises(KeyError):
        buggy(["--debug"])


@pytest.mark.parametrize("main, argv, prog", [
    (cli.eval_main, ["runs/x"], "fr-eval"),
    (cli.export_main, ["runs/x", "--which", "worst", "--out", "m"], "fr-export"),
    (recipes.train_main, ["quick-synthetic", "--bogus"], "fr-train"),
])
def test_bad_arguments_are_one_line(main, argv, prog, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "--help" in _one_line_error(capsys.readouterr().err, prog)


def test_a_closed_pipe_is_not_an_error():
    out = subprocess.run(f"{sys.executable} -m fr_lib.recipes --list | head -c 1",
                         shell=True, capture_output=True, text=True, timeout=120)
    assert out.stderr == "", out.stderr


def test_tools_fail_with_one_line_as_processes(tmp_path):
    bad_rec = tmp_path / "r.yaml"
    bad_rec.write_text("train:\n  batch_size: sixteen\n")
    for cmd, prog in [
            ([sys.executable, "-m", "fr_lib.recipes", str(bad_rec)], "fr-train"),
            ([sys.executable, "-m", "fr_lib.train.launch", "--", "/no/such/command"],
             "python -m fr_lib.train.launch"),
            ([sys.executable, "-m", "fr_lib.train.launch", "-n", "0", "--", "x"],
             "python -m fr_lib.train.launch")]:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        line = _one_line_error(out.stderr, prog)
        assert "batch_size: expected an integer, got 'sixteen'" in line or \
            "/no/such/command" in line or "--num-workers must be >= 1" in line


# -- 5. the launcher stops its whole cluster and notices a stopped worker --------------
def _children(pid):
    """All descendants of ``pid`` (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def _stat(pid):
    """(state, start time) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _alive(pid, started=None):
    """Running (not a zombie) and, given ``started``, the same process (no
    reused pid)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and started in (None, stat[1])


def _start_launcher(worker_code, *options):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fr_lib.train.launch", "-n", "2", "-s", "1",
         "--grace", "3", *options, "--", sys.executable, "-c", worker_code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, lines


def _wait_for(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_whole_cluster(sig):
    code = ("import time, mxnet as mx\n"
            "kv = mx.kv.create('dist_sync')\n"
            "print('ready', kv.rank, flush=True)\n"
            "time.sleep(300)\n")
    proc, lines = _start_launcher(code)
    try:
        # counted in the joined output: the two workers share the launcher's
        # stdout, and two prints at the same moment can interleave into
        # 'readyready 0' + ' 1' (seen in CI)
        assert _wait_for(lambda: "".join(lines).count("ready") == 2, 300), \
            (lines, proc.poll())
        pids = {p: (_stat(p) or ("", ""))[1] for p in _children(proc.pid)}
        assert len(pids) >= 4            # scheduler, server, 2 workers
        proc.send_signal(sig)
        # (generous limits: a loaded 2-core CI machine is slow, not wrong)
        assert proc.wait(timeout=60) == 128 + sig, proc.stderr.read()
        assert f"{signal.Signals(sig).name} received" in proc.stderr.read()
        assert _wait_for(lambda: not any(_alive(p, t) for p, t in pids.items()), 30), \
            [(p, _stat(p)) for p in pids]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stopped_worker_is_detected():
    code = ("import time\n"
            "for i in range(3000):\n"
            "    print('tick', flush=True)\n"
            "    time.sleep(0.1)\n")
    proc, lines = _start_launcher(code, "--heartbeat-timeout", "5")
    try:
        assert _wait_for(lambda: len(lines) >= 4, 300), lines
        pids = {p: (_stat(p) or ("", ""))[1] for p in _children(proc.pid)}
        workers = []
        for p in pids:
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if b"tick" in f.read():
                        workers.append(p)
            except OSError:
                pass
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGSTOP)
        assert proc.wait(timeout=120) == 2
        err = proc.stderr.read()
        line = _one_line_error(err, "python -m fr_lib.train.launch")
        assert f"(pid {workers[1]}) made no progress" in line, line
        assert "it is stopped (SIGSTOP?)" in line, line
        assert _wait_for(lambda: not any(_alive(p, t) for p, t in pids.items()), 30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_heartbeat_file_counts_as_progress(tmp_path):
    from fr_lib.train import launch
    # silent workers that touch FR_HEARTBEAT_FILE are not stopped
    code = ("import os, time\n"
            "for i in range(40):\n"
            "    open(os.environ['FR_HEARTBEAT_FILE'], 'a').close()\n"
            "    os.utime(os.environ['FR_HEARTBEAT_FILE'])\n"
            "    time.sleep(0.1)\n")
    assert launch.launch_local([sys.executable, "-c", code], num_workers=1,
                               heartbeat_timeout=3, timeout=60, grace=1) == [0]
    # ... and silent ones that do not are
    with pytest.raises(launch.LaunchError, match="worker 0 .*made no progress"):
        launch.launch_local([sys.executable, "-c", "import time; time.sleep(30)"],
                            num_workers=1, heartbeat_timeout=3, timeout=60, grace=1)
