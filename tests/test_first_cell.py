"""Every notebook's first cell, run for real with a stand-in ``google.colab``
and a fake pip / fr_install that fail first and then succeed."""
import importlib.util
import os
import subprocess
import sys
import types

import pytest

import fr_colab
import sync_notebooks as sync

URL = "file:///tmp/a-local-clone"


class FakeTools:
    """Stands in for ``subprocess.run``: pip and fr_install fail ``fail_*``
    times, then succeed; records every command."""

    def __init__(self, fail_pip=0, fail_install=0, install_effect=None,
                 complete=True):
        self.fail_pip, self.fail_install = fail_pip, fail_install
        self.complete = complete
        self.install_effect = install_effect
        self.installed = False   # fr_install --colab has succeeded
        self.bootstrapped = False  # fr_lib (fr_colab) pip-installed
        self.calls = []

    def __call__(self, args, **kwargs):
        args = list(args)
        self.calls.append(args)
        assert args[0] == sys.executable, "runs this kernel's Python"
        assert kwargs.get("capture_output") and kwargs.get("text")
        if args[1:4] == ["-m", "pip", "install"]:
            assert f"git+{URL}#subdirectory=fr_lib" in args
            if self.fail_pip:
                self.fail_pip -= 1
                return subprocess.CompletedProcess(
                    args, 1, "", "fatal: could not read from remote repository\n")
            self.bootstrapped = True
            return subprocess.CompletedProcess(args, 0, "", "")
        assert args[1:3] == ["-m", "fr_install"], args
        if "--check" in args:
            rc = 0 if self.installed else 1
            return subprocess.CompletedProcess(
                args, rc, "" if rc == 0 else "missing: mxnet, onnx\n", "")
        assert args[3:] == ["--colab"]
        if self.fail_install:
            self.fail_install -= 1
            return subprocess.CompletedProcess(
                args, 1, "$ pip install mxnet==1.9.1\n",
                "fr_install: step 'mxnet' failed; run: pip install mxnet==1.9.1\n")
        if self.install_effect:
            self.install_effect()
        self.installed = self.complete
        return subprocess.CompletedProcess(args, 0, "installed\n", "")

    def count(self, *words):
        return sum(all(w in c for w in words) for c in self.calls)


@pytest.fixture
def cell(monkeypatch):
    """Run the generated first cell; returns (run, fake, restarts)."""
    source = sync.setup_cell_source()
    monkeypatch.setenv("FR_REPO_URL", URL)
    monkeypatch.setenv("FR_QUICK", "1")
    restarts = []
    monkeypatch.setattr(fr_colab, "_restart", lambda: restarts.append(True))
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail("os.kill called"))
    state = {}

    def run(fake):
        state["fake"] = fake
        monkeypatch.setattr(subprocess, "run", fake)
        real_find_spec = importlib.util.find_spec

        def find_spec(name, *args):
            if name == "fr_colab" and not fake.bootstrapped:
                return None
            return real_find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        scope = {}
        exec(compile(source, "first-cell", "exec"), scope)
        return scope

    return run, restarts


def colab(monkeypatch):
    stub = types.ModuleType("google.colab")
    monkeypatch.setitem(sys.modules, "google.colab", stub)


def test_outside_colab_installs_and_prints_nothing(cell, capsys):
    run, restarts = cell
    fake = FakeTools()
    assert "google.colab" not in sys.modules
    scope = run(fake)
    assert scope["QUICK"] is True
    assert fake.calls == [] and restarts == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_colab_failures_are_reported_and_retried(cell, capsys, monkeypatch):
    colab(monkeypatch)
    run, restarts = cell
    fake = FakeTools(fail_pip=1, fail_install=1)

    # 1. pip cannot fetch fr_lib: its error and the command to run, no restart
    with pytest.raises(RuntimeError) as err:
        run(fake)
    message = str(err.value)
    assert "could not read from remote repository" in message
    assert f"!pip install -q --no-deps git+{URL}#subdirectory=fr_lib" in message
    assert fake.count("fr_install") == 0

    # 2. re-run: pip works; fr_install --colab fails -> its own last line
    with pytest.raises(fr_colab.SetupError) as err:
        run(fake)
    assert "step 'mxnet' failed; run: pip install mxnet==1.9.1" in str(err.value)
    assert "python -m fr_install --colab" in str(err.value)
    assert fake.count("pip", "install") == 2
    shown = capsys.readouterr().err  # what came before the failing line
    assert "$ pip install mxnet==1.9.1" in shown and "failed" not in shown

    # 3. re-run: pip is not needed again; the install is retried and checked
    scope = run(fake)
    assert scope["QUICK"] is True
    assert fake.count("pip", "install") == 2
    assert fake.count("--colab") == 5  # check, install; check, install, check
    assert fake.count("--check") == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "fr_lib 已装好" in out[0], out
    assert restarts == []

    # 4. re-run once complete: only the check, and no output at all
    calls = len(fake.calls)
    run(fake)
    assert [c[3:] for c in fake.calls[calls:]] == [["--check", "--colab"]]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert restarts == []


def test_incomplete_after_a_successful_install_is_an_error(cell, monkeypatch):
    colab(monkeypatch)
    run, restarts = cell
    fake = FakeTools(complete=False)
    fake.bootstrapped = True
    with pytest.raises(fr_colab.SetupError, match="missing: mxnet, onnx"):
        run(fake)
    assert fake.count("--check") == 2 and restarts == []


def test_restart_only_when_an_imported_module_was_replaced(
        cell, monkeypatch, tmp_path, capsys):
    colab(monkeypatch)
    run, restarts = cell
    module = tmp_path / "fr_first_cell_probe.py"
    module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fr_first_cell_probe  # noqa: F401 -- imported before the install
    monkeypatch.setitem(sys.modules, "fr_first_cell_probe", fr_first_cell_probe)

    def replace():  # what pip does when it upgrades a package: a new file
        module.unlink()
        module.write_text("VALUE = 2\n")

    fake = FakeTools(install_effect=replace)
    fake.bootstrapped = True
    run(fake)
    assert restarts == [True]
    assert "fr_first_cell_probe" in capsys.readouterr().out


def test_replaced_modules_sees_removed_and_rewritten_files(tmp_path):
    a, b, c = (tmp_path / f"{n}.py" for n in "abc")
    for f in (a, b, c):
        f.write_text("x = 1\n")
    mods = {n: types.SimpleNamespace(__file__=str(f))
            for n, f in (("pkg_a.sub", a), ("pkg_b", b), ("pkg_c", c))}
    before = fr_colab.imported_files(mods)
    a.unlink()
    b.unlink()
    b.write_text("x = 2\n")
    assert fr_colab.replaced_modules(before) == ["pkg_a", "pkg_b"]
