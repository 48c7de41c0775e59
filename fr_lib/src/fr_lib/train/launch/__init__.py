"""Start a parameter-server cluster for ``kvstore='dist_sync'`` on one machine.

MXNet's distributed kvstore needs three kinds of process, told apart by
environment variables: one *scheduler*, which introduces the others; one or
more *servers*, which hold the weights and sum the workers' gradients; and the
*workers*, which run the training script. A process that imports ``mxnet``
with ``DMLC_ROLE=server`` or ``scheduler`` becomes that role and never returns
to the script, so a server is simply ``python -c "import mxnet"``.

:func:`launch_local` starts all of them on 127.0.0.1 (what the book and the
tests do); on a cluster the same variables are set on each machine, with
``DMLC_PS_ROOT_URI`` the scheduler's address (see the appendix "recipes").

Command line::

    python -m fr_lib.train.launch -n 2 -s 1 -- python train.py --kvstore dist_sync

Every process of the cluster runs in its own process group, and the
launcher keeps their ids: when the launcher is stopped (SIGTERM, SIGINT /
Ctrl-C, or an error) it forwards SIGTERM to every group (the workers' own
children included), waits ``grace`` seconds and then SIGKILLs what is left,
so no scheduler, server or worker outlives it (on Linux they also receive
SIGTERM if the launcher itself is SIGKILLed). A worker that makes no
progress is detected by a heartbeat: progress is any output of the worker
on stdout/stderr (the launcher relays it) or a touch of the file named by
its ``FR_HEARTBEAT_FILE`` variable (:func:`heartbeat`; ``fr-train`` does
this after its steps, at most every 5 s); after
``heartbeat_timeout`` seconds without either (default 1800; 0 turns the
check off) the cluster is stopped with :class:`LaunchError` naming the
worker and its state (e.g. stopped by SIGSTOP).
"""
# Three parts: cluster.py (environment, heartbeat, launch_local), processes.py
# (process groups, stopping, output relay), command.py (the command line).
from .cluster import (HEARTBEAT_TIMEOUT, LaunchError, cluster_env, free_port, heartbeat,
                      launch_local)
from .command import main  # noqa: F401

__all__ = ["launch_local", "cluster_env", "free_port", "heartbeat", "LaunchError",
           "HEARTBEAT_TIMEOUT"]
