"""fr_install: what it installs for CPU / GPU / Hopper, per mode, and --check."""
import os
import subprocess
import sys

import pytest

import fr_install

NO_GPU, T4, A100_A10, H100 = [], [(7, 5)], [(8, 0), (8, 6)], [(9, 0)]


def state(**kw):
    base = {"numpy": "2.0.2", "mxnet": None, "cuda11_dir": "/x/fr_lib_cuda11",
            "keep": ["numpy==2.0.2", "matplotlib==3.10.0", "opencv-python==4.12.0.88"],
            "modules": {"matplotlib", "cv2"}}
    base.update(kw)
    return base


def flat(steps):
    return [step.text() for step in steps]


def pip_steps(steps):
    return [s for s in steps if s.command and s.command[1:4] == ["-m", "pip", "install"]]


@pytest.mark.parametrize("caps, wheel", [
    (NO_GPU, "mxnet==1.9.1"), (T4, "mxnet-cu117==1.9.1"),
    (A100_A10, "mxnet-cu117==1.9.1"), ([(8, 9)], "mxnet-cu117==1.9.1"),
    (H100, "mxnet==1.9.1"), ([(3, 7)], "mxnet==1.9.1")])
def test_wheel_by_compute_capability(caps, wheel):
    steps, notes = fr_install.plan(caps, python_version=(3, 12), state=state())
    mx = [s for s in steps if s.name.startswith("mxnet")][0]
    assert mx.command[-2:] == ["--no-deps", wheel]  # its numpy<2 pin is stale
    cuda = [s for s in steps if s.name == "CUDA 11 libraries"]
    if wheel.startswith("mxnet-cu"):
        (cuda,) = cuda
        # into fr_lib's own folder, never over another package's libraries
        i = cuda.command.index("--target")
        assert cuda.command[i + 1] == "/x/fr_lib_cuda11"
        assert set(fr_install.CUDA11_LIBS) <= set(cuda.command)
        assert "nvidia-nvtx-cu11" in cuda.command
    else:
        assert not cuda
    if H100[0] in caps:
        assert any("9.0 cannot run" in n for n in notes)


def test_cuda11_set_covers_what_libmxnet_needs():
    # libmxnet.so of mxnet-cu117 1.9.1 (readelf -d) needs these sonames; each
    # comes from one nvidia-*-cu11 wheel.
    provider = {"libcudart.so.11.0": "nvidia-cuda-runtime-cu11",
                "libcublas.so.11": "nvidia-cublas-cu11",
                "libcufft.so.10": "nvidia-cufft-cu11",
                "libcurand.so.10": "nvidia-curand-cu11",
                "libcusolver.so.11": "nvidia-cusolver-cu11",
                "libcusparse.so.11": "nvidia-cusparse-cu11",
                "libnvrtc.so.11.2": "nvidia-cuda-nvrtc-cu11",
                "libnvToolsExt.so.1": "nvidia-nvtx-cu11",
                "libcudnn.so.8": "nvidia-cudnn-cu11",
                "libnccl.so.2": "nvidia-nccl-cu11"}
    assert sorted(provider) == sorted(fr_install.CUDA11_SONAMES)
    names = {lib.split("=")[0] for lib in fr_install.CUDA11_LIBS}
    assert set(provider.values()) <= names


def test_never_changes_numpy_matplotlib_opencv():
    for caps in (NO_GPU, T4):
        steps, _ = fr_install.plan(caps, python_version=(3, 12), mode="colab",
                                   state=state())
        for step in pip_steps(steps):
            if "--no-deps" in step.command:
                continue
            # every resolving pip command holds the installed versions
            assert {"numpy==2.0.2", "matplotlib==3.10.0",
                    "opencv-python==4.12.0.88"} <= set(step.command), step
        assert not any("numpy==1." in t or "numpy<2" in t for t in flat(steps))


def test_book_and_colab_install_what_the_notebooks_import():
    steps, notes = fr_install.plan(NO_GPU, python_version=(3, 12), mode="book",
                                   state=state(modules=set(), keep=["numpy==1.26.4"]))
    text = " ".join(flat(steps))
    for pkg in ["onnx", "onnxruntime", "nvidia-dali-cuda120==1.35.0", "scikit-image",
                "mlxtend", "ipywidgets", "jupyter", "ipykernel", "nbclient",
                "matplotlib", "opencv-python", "setuptools"]:
        assert f" {pkg}" in text or f'"{pkg}' in text, pkg
    book_step = [s for s in steps if s.name == "book packages"][0].command
    assert not any(c.startswith(("gluoncv", "d2l")) for c in book_step)
    gd = [s for s in steps if s.name == "gluoncv and d2l"][0]
    assert gd.command[-3:] == ["--no-deps", "gluoncv==0.10.5.post0", "d2l==1.0.3"]
    colab, _ = fr_install.plan(NO_GPU, python_version=(3, 12), mode="colab",
                               state=state())
    book_step = [s for s in colab if s.name == "book packages"][0].command
    assert "jupyter" not in book_step  # Colab has its own
    # matplotlib/OpenCV present: only pinned to what is there, not added
    assert "matplotlib" not in book_step and "opencv-python" not in book_step


def test_dali_only_where_it_has_wheels():
    steps, notes = fr_install.plan(NO_GPU, python_version=(3, 13), mode="book",
                                   state=state())
    assert not any("nvidia-dali" in t for t in flat(steps))
    assert any("DALI has no wheel for Python 3.13" in n for n in notes)


def test_lib_mode_is_small_and_rerun_installs_no_mxnet():
    steps, _ = fr_install.plan(NO_GPU, python_version=(3, 11), mode="lib",
                               state=state(mxnet="mxnet"))
    assert [s.name for s in steps] == ["mxnet dependencies"]
    # switching to the GPU build removes the CPU one first
    steps, _ = fr_install.plan(T4, python_version=(3, 11), state=state(mxnet="mxnet"))
    names = [s.name for s in steps]
    assert names[:2] == ["remove mxnet", "mxnet-cu117"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fr_install", *args],
                          capture_output=True, text=True, timeout=300)


def test_dry_run_cli():
    out = run_cli("--dry-run", "--gpu-cc", "9.0")
    assert out.returncode == 0, out.stderr
    assert "cannot run MXNet 1.9.1" in out.stdout
    assert "$ " in out.stdout and "fr_lib.ops" in out.stdout
    out = run_cli("--dry-run", "--colab", "--gpu-cc", "7.5")
    assert "--no-deps mxnet-cu117==1.9.1" in out.stdout
    assert "nvidia-nvtx-cu11" in out.stdout and "--target" in out.stdout


def test_check_cli():
    # this environment (CPU mxnet) is complete for the library...
    out = run_cli("--check", "--gpu-cc", "none")
    assert out.returncode == 0, out.stderr
    # ...but not for a T4, which wants the GPU build and its CUDA libraries
    out = run_cli("--check", "--gpu-cc", "7.5")
    assert out.returncode == 1
    assert "mxnet-cu117==1.9.1 (found mxnet)" in out.stderr
    assert "libnvToolsExt.so.1" in out.stderr
    assert "fr_install" in out.stderr.splitlines()[-1]


def test_failed_step_prints_one_line(monkeypatch, capsys):
    broken = fr_install.Step("book packages", [sys.executable, "-c", "raise SystemExit(3)"])
    # main() (fr_install/cli.py) runs the steps of the plan it imported
    monkeypatch.setattr(fr_install.cli, "plan", lambda *a, **k: ([broken], []))
    assert fr_install.main(["--gpu-cc", "none", "--book"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "step 'book packages' failed (exit 3)" in err[0]
    assert "Run: " in err[0] and "raise SystemExit(3)" in err[0]


def test_timer_without_ipython_names_ipython(tmp_path):
    # d2l is installed but its own import of IPython fails: the message must
    # name IPython, not d2l.
    import importlib.util
    if importlib.util.find_spec("d2l") is None:
        pytest.skip("d2l not installed")
    (tmp_path / "IPython").mkdir()
    (tmp_path / "IPython" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'IPython'\", name='IPython')\n")
    code = ("import fr_lib.utils as u\n"
            "try:\n    u.Timer\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "missing module 'IPython'" in out.stdout
    assert "pip install ipython" in out.stdout and "pip install d2l" not in out.stdout
