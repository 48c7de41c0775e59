"""What gets installed: MXNet's build for the GPUs found (:func:`wanted_mxnet`),
its real dependencies, the CUDA 11 libraries of its GPU wheels, and the
packages the notebooks import.
"""
__all__ = ["CUDA11_LIBS", "MXNET_DEPS", "BOOK_PACKAGES", "wanted_mxnet"]

MXNET = "1.9.1"
# mxnet's real dependencies (its metadata also says numpy<2, which is stale).
MXNET_DEPS = ["requests>=2.20,<3", "graphviz>=0.8.1,<0.9"]
# What libmxnet.so of mxnet-cu117 1.9.1 needs (readelf -d: NEEDED) besides the
# driver's libcuda.so.1 and the system's libgomp/libstdc++, and the wheel that
# provides each: libcudart.so.11.0, libcublas.so.11 (+ libcublasLt),
# libcufft.so.10, libcurand.so.10, libcusolver.so.11, libcusparse.so.11,
# libnvrtc.so.11.2, libnvToolsExt.so.1, libcudnn.so.8, libnccl.so.2.
CUDA11_LIBS = ["nvidia-cuda-runtime-cu11", "nvidia-cublas-cu11",
               "nvidia-cufft-cu11", "nvidia-curand-cu11", "nvidia-cusolver-cu11",
               "nvidia-cusparse-cu11", "nvidia-cuda-nvrtc-cu11",
               "nvidia-nvtx-cu11", "nvidia-cudnn-cu11==8.9.*", "nvidia-nccl-cu11"]
CUDA11_SONAMES = ["libcudart.so.11.0", "libcublas.so.11", "libcufft.so.10",
                  "libcurand.so.10", "libcusolver.so.11", "libcusparse.so.11",
                  "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8",
                  "libnccl.so.2"]
MIN_CC, MAX_CC = (5, 0), (8, 9)
# The packages the notebooks import (module -> pip requirement).
BOOK_PACKAGES = {
    "gluoncv": "gluoncv==0.10.5.post0",
    "skimage": "scikit-image",
    "mlxtend": "mlxtend",
    "sklearn": "scikit-learn",
    "ipywidgets": "ipywidgets>=8,<9",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "pandas": "pandas",
    "scipy": "scipy",
    "IPython": "ipython",
    "matplotlib_inline": "matplotlib-inline",
    # gluoncv's own dependencies (it is installed with --no-deps, so that it
    # cannot add a second OpenCV next to a headless one)
    "portalocker": "portalocker",
    "yacs": "yacs",
    "autocfg": "autocfg",
    "PIL": "Pillow",
}
JUPYTER_PACKAGES = {"jupyter_core": "jupyter", "ipykernel": "ipykernel",
                    "nbclient": "nbclient", "nbconvert": "nbconvert"}
# NVIDIA DALI 1.35.0: the last release with the MXNet plugin; CUDA 12 build,
# whose CPU pipelines also run without a GPU. Wheels for Python <= 3.12 only.
DALI = "nvidia-dali-cuda120==1.35.0"
D2L = "d2l==1.0.3"
FONTS = ["fonts-wqy-microhei", "fonts-noto-cjk"]


def wanted_mxnet(caps):
    """``(distribution, notes)`` for these GPU compute capabilities."""
    notes = []
    usable = [c for c in caps if MIN_CC <= c <= MAX_CC]
    for cap in caps:
        if cap not in usable:
            notes.append(f"GPU with compute capability {cap[0]}.{cap[1]} cannot run "
                         f"MXNet {MXNET} (its GPU wheels cover 5.0-8.6, also "
                         "8.9; no PTX): using the CPU build")
    if usable:
        notes.append(f"installing mxnet-cu117 for {len(usable)} supported GPU(s)")
        return "mxnet-cu117", notes
    if not caps:
        notes.append("no NVIDIA GPU found: installing the CPU build")
    return "mxnet", notes
