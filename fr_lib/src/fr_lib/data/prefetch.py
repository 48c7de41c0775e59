"""A background thread that makes a batch source's batches ahead of the consumer.

:class:`Prefetcher` wraps any :class:`~fr_lib.data.source.BatchSource`
(see :mod:`fr_lib.data.source` for the protocol). What it guarantees: the
same batches in the same order as the source alone; ``state_dict()`` is the
position after the batch the consumer last received (never the producer's);
at most ``depth`` batches wait in the queue; an exception raised while making
a batch is raised by the ``next_batch()`` call that would have returned it,
with a note naming the data position; ``close()`` stops the thread and sets
the source back to the consumer's position.
"""
import queue
import threading

from ..utils.checks import check_int

__all__ = ["Prefetcher"]


_DONE = object()


def _produce(source, depth_queue, stop):
    """The prefetch thread: make batches until stopped or until one fails."""
    while not stop.is_set():
        where = None
        try:
            where = source.state_dict()
            batch = source.next_batch()
            item = (batch, source.state_dict(), None, None)
        except Exception as err:  # handed to the consumer, raised there
            item = (None, None, err, where)
        while not stop.is_set():
            try:
                depth_queue.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if item[2] is not None:
            return


class Prefetcher:
    """Make a source's batches in a background thread, ``depth`` ahead.

    The thread starts at the first :meth:`next_batch` and calls
    ``source.next_batch()`` into a queue of at most ``depth`` batches, so
    while the consumer trains on one batch the next ones are read and
    decoded (OpenCV and NumPy release the GIL). The batches and their order
    are exactly those of the source alone.

    It is a :class:`~fr_lib.data.source.BatchSource` itself.

    Parameters
    ----------
    source : BatchSource
        Used only from the prefetch thread while it runs.
    depth : int, default 2
        Batches made ahead (the thread holds one more while it waits).

    Notes
    -----
    :meth:`state_dict` is the position after the batch the consumer last
    received. :meth:`load_state_dict` and :meth:`close` stop the thread,
    drop the batches made ahead and set the source back to that position.
    An exception raised by ``source.next_batch()`` is raised by the
    :meth:`next_batch` call that would have returned that batch, with a
    note naming the data position; the batches before it are delivered
    first.
    """

    def __init__(self, source, depth=2):
        for attr in ("next_batch", "state_dict", "load_state_dict"):
            if not hasattr(source, attr):
                raise TypeError(f"Prefetcher needs a source with {attr}(), got "
                                f"{type(source).__name__}")
        self._name = getattr(source, "name", type(source).__name__)
        self.depth = check_int("depth", depth, 1)
        self.source = source
        self._thread = self._queue = self._stop = None
        self._state = None  # the consumer's position while the thread runs

    @property
    def num_parts(self):
        return getattr(self.source, "num_parts", 1)

    @property
    def part_index(self):
        return getattr(self.source, "part_index", 0)

    def __len__(self):
        return len(self.source)

    @property
    def running(self):
        """Whether the prefetch thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _start(self):
        self._state = self.source.state_dict()
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        # the thread holds the source, the queue and the event, not self, so a
        # forgotten Prefetcher can be garbage collected (and stops its thread)
        self._thread = threading.Thread(target=_produce, name="fr_prefetch",
                                        args=(self.source, self._queue, self._stop),
                                        daemon=True)
        self._thread.start()

    def next_batch(self):
        """The next ``(X, y)``, made in the background."""
        if self._thread is None:
            self._start()
        while True:
            try:
                batch, state, err, where = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    self._thread = None
                    raise RuntimeError(f"the prefetch thread of {self._name} "
                                       "stopped without a batch or an error") from None
        if err is not None:
            self._join()
            if where is not None and hasattr(err, "add_note"):
                err.add_note(f"(raised in the prefetch thread while {self._name} "
                             f"made the batch at data position {where})")
            raise err
        self._state = state
        return batch

    def state_dict(self):
        """The position after the batch the consumer last received."""
        if self._state is not None:
            return dict(self._state)
        return self.source.state_dict()

    def _join(self):
        """Stop the thread and drop what it made ahead."""
        if self._thread is None:
            return
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread = self._queue = self._stop = None

    def load_state_dict(self, state):
        """Stop prefetching and continue from ``state``."""
        self._join()
        self._state = None
        self.source.load_state_dict(state)

    def close(self):
        """Stop the thread; the source is set back to the consumer's position."""
        if self._thread is not None:
            self._join()
            if self._state is not None:
                self.source.load_state_dict(self._state)
        self._state = None

    def __del__(self):
        try:
            if self._stop is not None:
                self._stop.set()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
