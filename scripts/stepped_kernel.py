"""A kernel manager for nbclient whose client never misses a ready message.

The problem (jupyter/nbclient#312): while a cell runs, nbclient waits for the
kernel's ``execute_reply`` with one ``shell_channel.get_msg(timeout=cell
timeout)``. When the cell writes into an ipywidgets ``Output`` (the book's
``interactive_output`` explorers do), nbclient mimics the front end and sends
the widget's new state to the kernel *on that same shell socket*, from the
task that reads IOPub. Once in a while that send swallows the socket's
wake-up: the reply has arrived, but the waiting poll is not woken and only
finds it when its timeout fires. The kernel sits idle and the cell "takes"
the whole cell timeout; it then succeeds, so nothing fails, the run is only
slower (by 1800 s per occurrence in CI, with the old 30-minute timeout).

``benchmarks/nb_hang.py`` reproduces it: a notebook of 60 cells that print
into an Output widget, executed many times with an 8 s cell timeout. With
nbclient's default client about one cell in a run waits the full 8 s; with
this one none does.

The fix here: the client's shell and IOPub channels wait in steps of at most
:data:`STEP` seconds. A poll that times out checks the socket once more, so a
message that arrived is read within one step; the overall timeout is kept.
It is wired through public traitlets only:
``NotebookClient(..., kernel_manager_class=SteppedKernelManager)``
(``jupyter_cache``'s ``single_nb_execution`` passes that keyword through).
"""
import queue
import time

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type, default

#: Longest single wait, in seconds: the most a missed wake-up can cost.
STEP = 0.5


async def get_in_steps(get_msg, timeout=None, step=STEP, clock=time.monotonic):
    """Call ``get_msg(timeout=...)`` with waits of at most ``step`` seconds
    until it returns a message or ``timeout`` seconds (``None``: no limit)
    have passed; then re-raise its ``queue.Empty``."""
    end = None if timeout is None else clock() + timeout
    while True:
        left = step if end is None else end - clock()
        try:
            return await get_msg(timeout=max(0.0, min(step, left)))
        except queue.Empty:
            if end is not None and clock() >= end:
                raise


class SteppedChannel(AsyncZMQSocketChannel):
    """An async ZMQ channel whose ``get_msg`` waits in steps (see module)."""

    async def get_msg(self, timeout=None):
        return await get_in_steps(super().get_msg, timeout)


class SteppedKernelClient(AsyncKernelClient):
    """AsyncKernelClient with stepped shell and IOPub channels."""

    shell_channel_class = Type(SteppedChannel)
    iopub_channel_class = Type(SteppedChannel)


class SteppedKernelManager(AsyncKernelManager):
    """AsyncKernelManager whose ``client()`` is a :class:`SteppedKernelClient`."""

    @default("client_factory")
    def _stepped_client_factory(self):
        return SteppedKernelClient


def main(argv=None):
    """``python scripts/stepped_kernel.py ARGS``: ``jupyter nbconvert ARGS``
    with this kernel manager (what ``scripts/section_times.py`` runs)."""
    import sys
    from nbconvert.nbconvertapp import NbConvertApp
    argv = list(sys.argv[1:] if argv is None else argv)
    NbConvertApp.launch_instance(argv=argv + [
        "--ExecutePreprocessor.kernel_manager_class=stepped_kernel.SteppedKernelManager"])


if __name__ == "__main__":
    main()
