"""Build hooks only; the project's metadata is in pyproject.toml.

fr_lib installs one extra file, ``fr_numpy_compat.pth``, at the top of
site-packages: it restores the NumPy aliases MXNet 1.9.1 uses in every Python
process (see ``src/fr_numpy_compat.py``). setuptools has no declarative way to
put a file there, so ``build_py`` (regular wheels) and ``editable_wheel``
(``pip install -e``) add it. If a future setuptools skips the editable hook,
``import fr_lib`` writes the file itself.
"""
import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "src"))
os.environ["FR_NUMPY_COMPAT"] = "0"  # importing it must not hook this process
import fr_numpy_compat  # noqa: E402

PTH = fr_numpy_compat.PTH_NAME


def write_pth(directory):
    with open(os.path.join(directory, PTH), "w", encoding="utf-8") as f:
        f.write(fr_numpy_compat.pth_line())


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            os.makedirs(self.build_lib, exist_ok=True)
            write_pth(self.build_lib)

    def get_outputs(self, *args, **kwargs):
        outputs = super().get_outputs(*args, **kwargs)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH))
        return outputs


cmdclass = {"build_py": BuildPyWithPth}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: legacy `develop`, fr_lib writes the file
    editable_wheel = None

if editable_wheel is not None and hasattr(editable_wheel, "_run_build_commands"):
    class EditableWheelWithPth(editable_wheel):
        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib,
                                tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel,
                                                 build_lib, tmp_dir)
            write_pth(str(unpacked_wheel))
            return result

    cmdclass["editable_wheel"] = EditableWheelWithPth

setup(cmdclass=cmdclass)
