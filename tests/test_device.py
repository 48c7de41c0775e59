"""Device helpers: GPU discovery, CPU fallback with a log line, several CPUs."""
import logging

import mxnet as mx
import numpy as np
import pytest

from fr_lib.utils import device, get_devices, list_gpus, split_and_load


def test_cpu_fallback_logs_clearly(caplog):
    caplog.set_level(logging.INFO, logger="fr_lib")
    devices = get_devices()
    if list_gpus():
        pytest.skip("this machine has a usable GPU")
    assert devices == [mx.cpu(0)]
    assert "no usable GPU found; falling back to 1 device: cpu(0)" in caplog.text


def test_several_cpu_contexts_run_data_parallel_code():
    devices = get_devices(num_gpus=0, num_cpus=2)
    assert devices == [mx.cpu(0), mx.cpu(1)]
    X = mx.nd.arange(12).reshape((6, 2))
    parts = split_and_load(X, devices)
    assert [p.context for p in parts] == devices
    # per-device computation, then a sum across devices = the whole batch
    total = sum((p * 2).sum().as_in_context(mx.cpu()) for p in parts)
    assert total.asscalar() == 2 * np.arange(12).sum()


def test_forcing_cpu_does_not_warn(caplog):
    caplog.set_level(logging.INFO, logger="fr_lib")
    assert get_devices(num_gpus=0) == [mx.cpu(0)]
    assert "falling back" not in caplog.text


def test_asking_for_missing_gpus_is_an_error(monkeypatch):
    monkeypatch.setattr(device, "list_gpus", lambda: [])
    with pytest.raises(ValueError, match="asked for 2 GPU"):
        get_devices(num_gpus=2)
    with pytest.raises(ValueError, match="num_cpus"):
        get_devices(num_cpus=0)


def test_unusable_gpu_is_skipped_with_reason(monkeypatch, caplog):
    # A Hopper GPU with MXNet's cu117 wheel: visible, but kernels fail.
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(device, "_gpu_works", lambda ctx: (
        (True, "") if ctx.device_id == 1 else
        (False, "no kernel image is available for execution on the device")))
    caplog.set_level(logging.INFO, logger="fr_lib")
    assert list_gpus() == [mx.gpu(1)]
    assert "gpu(0) is visible but MXNet cannot run on it" in caplog.text
    assert "no kernel image" in caplog.text


def test_gpu_probe_reports_failure_on_cpu_build():
    if mx.context.num_gpus():
        pytest.skip("GPU build")
    ok, why = device._gpu_works(mx.gpu(0))
    assert not ok and why
