"""scripts/stepped_kernel.py: the kernel client the book's notebooks run with.

nbclient's own client can miss the kernel's reply to a cell that writes into an
ipywidgets Output and then wait the whole cell timeout (benchmarks/nb_hang.py
reproduces it). These tests check the stepped wait itself with a fake channel
and clock, that the manager really hands out stepped channels, and that every
place that executes the book's notebooks uses it.
"""
import asyncio
import os
import queue

import pytest

import stepped_kernel as sk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeChannel:
    """get_msg that 'waits' by advancing a fake clock; a message becomes
    readable at ``ready_at`` but, like a missed wake-up, is only returned by
    a call whose wait ends after that time."""

    def __init__(self, ready_at=None):
        self.now = 0.0
        self.ready_at = ready_at
        self.waits = []

    def clock(self):
        return self.now

    async def get_msg(self, timeout=None):
        assert timeout is not None, "a stepped wait never waits without a limit"
        self.waits.append(timeout)
        self.now += timeout
        if self.ready_at is not None and self.now >= self.ready_at:
            return {"msg": "reply"}
        raise queue.Empty


def run(channel, timeout, step=0.5):
    return asyncio.run(sk.get_in_steps(channel.get_msg, timeout, step=step,
                                       clock=channel.clock))


def test_no_limit_reads_a_missed_message_within_one_step():
    channel = FakeChannel(ready_at=3.2)
    assert run(channel, None) == {"msg": "reply"}
    assert channel.waits == [0.5] * 7                # found at 3.5 s, not "never"
    assert channel.now - channel.ready_at <= 0.5


def test_a_limit_is_kept_and_ends_in_empty():
    channel = FakeChannel(ready_at=None)
    with pytest.raises(queue.Empty):
        run(channel, 1.2)
    assert channel.waits == pytest.approx([0.5, 0.5, 0.2])
    assert channel.now == pytest.approx(1.2)


def test_a_message_before_the_limit_is_returned():
    channel = FakeChannel(ready_at=0.9)
    assert run(channel, 30) == {"msg": "reply"}
    assert channel.waits == [0.5, 0.5]


def test_zero_timeout_polls_once():
    channel = FakeChannel(ready_at=None)
    with pytest.raises(queue.Empty):
        run(channel, 0)
    assert channel.waits == [0.0]


def test_manager_hands_out_stepped_shell_and_iopub_channels():
    client = sk.SteppedKernelManager().client()
    assert isinstance(client, sk.SteppedKernelClient)
    assert issubclass(client.shell_channel_class, sk.SteppedChannel)
    assert issubclass(client.iopub_channel_class, sk.SteppedChannel)


def test_an_output_widget_notebook_runs_with_stepped_channels(tmp_path):
    """A real kernel: benchmarks/nb_hang.py's notebook, one cell printing into
    an Output widget (nbclient answers each print on the shell socket),
    executes; its prints land in the widget; the client it ran with had
    stepped shell and IOPub channels."""
    import importlib.util
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipywidgets")
    from nbclient import NotebookClient
    spec = importlib.util.spec_from_file_location(
        "nb_hang", os.path.join(ROOT, "benchmarks", "nb_hang.py"))
    nb_hang = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nb_hang)
    nb = nb_hang.make_notebook(cells=1, prints=5)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}},
                            kernel_manager_class=sk.SteppedKernelManager)
    seen = []
    client.on_cell_executed = lambda cell, cell_index, execute_reply: seen.append(
        (execute_reply["content"]["status"], type(client.kc.shell_channel),
         type(client.kc.iopub_channel)))
    client.execute()
    assert seen == [("ok", sk.SteppedChannel, sk.SteppedChannel)] * 2
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]
    outputs = [m["state"].get("outputs") for m in state["state"].values()
               if m["model_name"] == "OutputModel"]
    assert outputs and "".join(o["text"] for o in outputs[0]) == "0\n1\n2\n3\n4\n"
    assert nbformat.validate(nb) is None


def test_execute_book_runs_notebooks_with_the_stepped_manager(tmp_path, monkeypatch):
    import importlib.util
    import types
    import nbformat
    from jupyter_cache.executors import utils
    from nbformat.v4 import new_notebook
    spec = importlib.util.spec_from_file_location(
        "execute_book", os.path.join(ROOT, "scripts", "execute_book.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = {}

    def fake(nb, **kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(nb=nb, time=0.1, exc_string=None)
    monkeypatch.setattr(utils, "single_nb_execution", fake)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "a.ipynb"
    nbformat.write(new_notebook(), str(path))
    module._execute(str(path), 1)
    assert seen["kernel_manager_class"] is sk.SteppedKernelManager
    assert seen["timeout"] == module.cell_timeout()


def test_the_other_notebook_runners_use_the_stepped_manager():
    """colab_sim (the Colab runner) and section_times (via stepped_kernel's
    nbconvert entry) go through it too."""
    def read(name):
        with open(os.path.join(ROOT, "scripts", name), encoding="utf-8") as f:
            return f.read()
    colab = read("colab_sim.py")
    assert "kernel_manager_class=SteppedKernelManager" in colab
    assert '"stepped_kernel.py"' in colab                 # copied beside the runner
    assert '"stepped_kernel.py"' in read("section_times.py")
