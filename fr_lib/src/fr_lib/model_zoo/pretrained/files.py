"""Where InsightFace's models come from: the names of the published ONNX models
(:data:`INSIGHTFACE_MODELS`), their model packs on InsightFace's release page
(downloaded once, atomically) and the local cache
(:func:`insightface_file`).
"""
import os
import tempfile
import zipfile

__all__ = ["INSIGHTFACE_MODELS", "INSIGHTFACE_URL", "insightface_file"]

INSIGHTFACE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7"

# name -> (fr_lib model, model pack zip, member of the pack)
INSIGHTFACE_MODELS = {
    "w600k_r50": ("iresnet50", "buffalo_l.zip", "w600k_r50.onnx"),
    "w600k_mbf": ("mobilefacenet_512", "buffalo_s.zip", "w600k_mbf.onnx"),
    "glintr100": ("iresnet100", "antelopev2.zip", "glintr100.onnx"),
}

def _cache_dir():
    root = os.environ.get("MXNET_HOME", os.path.join("~", ".mxnet"))
    return os.path.join(os.path.expanduser(root), "models", "insightface")


def _download(url, dest):
    """Download ``url`` to ``dest`` through a temporary file and a rename."""
    import urllib.request
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def insightface_file(spec, root=None, download=True):
    """The local path of an InsightFace model named by ``spec``.

    Book: introduced in ``chapter_deployment/verification-demo`` (人脸验证演示).

    ``spec`` is a path to a ``.pth`` or ``.onnx`` file, or a name of
    :data:`INSIGHTFACE_MODELS` (``w600k_r50``, ``w600k_mbf``, ``glintr100``,
    with or without ``.onnx``). Names are looked up in ``root`` (default
    ``~/.mxnet/models/insightface``); when missing, the model pack is
    downloaded from InsightFace's release page, the member extracted
    (atomically) and the zip removed. ``.pth`` backbones are published on
    OneDrive/Baidu only, so they are never downloaded: pass their path.
    """
    spec = os.path.expanduser(str(spec))
    if os.path.isfile(spec):
        return spec
    root = os.path.expanduser(root) if root else _cache_dir()
    base = os.path.basename(spec)
    name = base[:-5] if base.endswith(".onnx") else base
    cached = os.path.join(root, base if base.endswith((".onnx", ".pth")) else name + ".onnx")
    if os.path.isfile(cached):
        return cached
    if name not in INSIGHTFACE_MODELS:
        raise FileNotFoundError(
            f"no file {spec!r} and no cached {cached!r}; InsightFace's .pth "
            "backbones (arcface_torch model zoo, OneDrive/Baidu links in "
            "recognition/arcface_torch/README.md) must be downloaded by hand "
            f"and passed by path; known ONNX names: {sorted(INSIGHTFACE_MODELS)}")
    _, pack, member = INSIGHTFACE_MODELS[name]
    url = f"{INSIGHTFACE_URL}/{pack}"
    if not download:
        raise FileNotFoundError(f"{cached} not found and download=False; "
                                f"it is {member} in {url}")
    zpath = os.path.join(root, pack)
    try:
        if not os.path.isfile(zpath):
            _download(url, zpath)
    except OSError as e:
        raise FileNotFoundError(
            f"{cached} not found and {url} could not be downloaded ({e}); "
            f"without a network, download {pack} elsewhere and put {member} "
            f"at {cached}") from e
    if not zipfile.is_zipfile(zpath):
        os.remove(zpath)
        raise ValueError(f"{zpath} (from {url}) is not a zip archive; removed it, "
                         "try again")
    with zipfile.ZipFile(zpath) as zf:
        hits = [n for n in zf.namelist() if os.path.basename(n) == member]
        if not hits:
            raise ValueError(f"{zpath}: no {member} in the archive")
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(zf.read(hits[0]))
        os.replace(tmp, cached)
    os.remove(zpath)
    return cached


