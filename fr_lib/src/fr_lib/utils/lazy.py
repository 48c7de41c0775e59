"""Re-export names from optional packages (d2l, gluoncv) on first use."""
import importlib

__all__ = ["lazy_exports"]

# import name -> pip name, where they differ
PIP_NAMES = {"IPython": "ipython", "matplotlib_inline": "matplotlib-inline",
             "cv2": "opencv-python", "yaml": "pyyaml", "PIL": "Pillow",
             "sklearn": "scikit-learn", "skimage": "scikit-image"}


def lazy_exports(module_name, table):
    """Return a module ``__getattr__`` that imports ``table[name]`` on demand.

    ``table`` maps an exported name to ``(module, attribute, pip_name)``. The
    import happens when the name is first used, so ``import fr_lib`` does not
    need d2l or gluoncv; a missing package gives an error naming what to install.
    """
    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        source, attr, pip_name = table[name]
        try:
            module = importlib.import_module(source)
        except ImportError as err:
            missing = (getattr(err, "name", None) or "").split(".")[0]
            if missing and missing != source.split(".")[0]:
                # the package is there but one of its own imports is not
                # (d2l.mxnet needs IPython, pandas, matplotlib_inline ...)
                need = PIP_NAMES.get(missing, missing)
                raise ImportError(
                    f"{module_name}.{name} comes from {source}.{attr}, which "
                    f"needs the missing module {missing!r}; install it with: "
                    f"pip install {need}  (or everything the book uses: "
                    "python -m fr_install --book)") from err
            raise ImportError(
                f"{module_name}.{name} comes from {source}.{attr}; install it "
                f"with: pip install {pip_name}") from err
        return getattr(module, attr)
    return __getattr__
