"""Many scenes on a Dask cluster (issue 15): one ``jobs.classify`` per scene, spread over distributed workers.

Why dask.distributed and not a pool of our own: the same plan runs on a ``LocalCluster`` on this machine or,
given a scheduler address, on a cluster someone already runs (``dask scheduler`` + workers, dask-jobqueue on
SLURM/PBS, dask-kubernetes, dask-gateway); it brings worker restarts, a dashboard and cancellation for free.

Guarantees, each for a reason:

- a scene's outputs are made by the very ``engine.jobs.classify`` that ``difflc:classify`` calls, so they are
  byte-identical to a single-process run (same model file, same settings);
- a scene's outputs are complete or absent: a worker classifies into a private staging folder inside the output
  folder (same filesystem) and only a finished scene is moved into place, the map last;
- a failing scene is reported (its input and the error) and tried once more, the other scenes go on;
- cancel sets a cluster-wide event that the running classifications poll, cancels the futures, closes a local
  cluster (its worker processes end) and removes the staging folder: no partial file is left.

A remote scheduler needs no plugin install: each scene goes as a task of the standard library's ``pickle.loads``
on a payload only the workers open (:func:`remote_call`), and before any work the batch checks that every worker
imports the plugin (:func:`check_workers`), naming those that do not and what to put on their PYTHONPATH.

dask/distributed (and torch) are imported only inside the functions that run a batch: qgis_process loads every
provider at each call and must stay fast without them. No QGIS import here.
"""
from __future__ import annotations

import argparse
import glob
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import files
from ..errors import UserInputError
from ..cpu import available_cores
from ..progress import Cancelled, Progress

MAP_SUFFIX = "_classes.tif"
CONFIDENCE_SUFFIX = "_confidence.tif"
DEFAULT_PATTERN = "*.tif"
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".nc", ".hdr", ".dat", ".bsq", ".bil", ".bip")
STAGING_PREFIX = files.TEMP_PREFIX + "batch-"
CANCEL_POLL_S = 1.0  # how often a running scene asks the scheduler whether the batch was cancelled
WORKER_WAIT_S = 30.0  # how long a batch on a remote scheduler waits for its first worker


# ------------------------------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class SceneUnit:
    """One work unit: one scene classified into its own map (and confidence) named after the input."""

    hsi: str
    output: str
    confidence: Optional[str] = None
    sar: Optional[str] = None
    # a row block [r0, r1) of the scene: then output/confidence are file NAMES in the batch's staging folder and
    # an Assembly puts the blocks together into the scene's map
    rows: Optional[Tuple[int, int]] = None

    @property
    def name(self) -> str:
        return os.path.basename(self.hsi) + (f" rows {self.rows[0]}-{self.rows[1] - 1}" if self.rows else "")


@dataclass(frozen=True)
class Assembly:
    """One large scene split into row-block units; its map is written once every block is done."""

    hsi: str
    output: str
    confidence: Optional[str]
    parts: Tuple[int, ...]  # indices of its units in BatchPlan.units, top to bottom


@dataclass(frozen=True)
class BatchPlan:
    """Everything the workers need, as plain paths: workers must see the same files (same paths)."""

    model: str
    units: Tuple[SceneUnit, ...]
    output_folder: str
    device: str = "cpu"
    retries: int = 1  # a failed unit is submitted this many more times before it is reported as failed
    assemblies: Tuple[Assembly, ...] = ()


@dataclass(frozen=True)
class ClusterSpec:
    """Where the plan runs: a LocalCluster of ``n_workers`` processes, or an existing scheduler's address."""

    n_workers: int = 2
    scheduler: Optional[str] = None  # e.g. tcp://10.0.0.5:8786; None = a LocalCluster on this machine
    processes: bool = True  # False: threads of this process (tests; no parallel speed-up under the GIL)
    # torch intra-op threads per worker. None: cores // n_workers on a LocalCluster (so n workers never
    # oversubscribe the cores), and the worker's own default on a remote cluster (distributed's nannies set
    # OMP_NUM_THREADS=1: start one worker process per core there)
    torch_threads: Optional[int] = None


@dataclass
class UnitResult:
    """What became of one scene: done (outputs in place) or failed (outputs absent), and why."""

    unit: SceneUnit
    ok: bool
    attempts: int
    errors: List[str] = field(default_factory=list)  # one per failed attempt, "Type: message"
    class_pixels: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # classify time of the successful attempt, on its worker
    worker: str = ""
    peak_rss_mib: float = 0.0  # the worker process's peak resident memory so far (VmHWM)

    @property
    def error(self) -> Optional[str]:
        return self.errors[-1] if self.errors else None


@dataclass
class BatchOutcome:
    results: List[UnitResult]
    seconds: float = 0.0  # wall time of the whole batch, cluster start-up included
    n_workers: int = 0
    scheduler: str = ""
    startup_s: float = 0.0  # of which starting (or connecting to) the cluster

    @property
    def done(self) -> List[UnitResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> List[UnitResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        lines = [f"{len(self.done)} of {len(self.results)} scene(s) classified in {self.seconds:.1f} s on "
                 f"{self.n_workers} worker(s) ({self.scheduler})"]
        for r in self.failed:
            lines.append(f"FAILED {r.unit.hsi} after {r.attempts} attempt(s): {r.error}")
        return "\n".join(lines)


def find_inputs(inputs: Sequence[str], pattern: str = DEFAULT_PATTERN) -> List[str]:
    """Files as given, folders expanded with ``pattern`` (sorted); duplicates dropped, order kept."""
    found: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            matches = sorted(p for p in glob.glob(os.path.join(item, pattern)) if os.path.isfile(p))
            found.extend(p for p in matches if not os.path.basename(p).startswith(files.TEMP_PREFIX))
        else:
            found.append(item)
    seen, unique = set(), []
    for path in found:
        key = files.real(path)
        if key not in seen:
            seen.add(key)
            unique.append(os.path.abspath(path))
    return unique


def plan_scenes(model: str, inputs: Sequence[str], output_folder: str, confidence: bool = False,
                pattern: str = DEFAULT_PATTERN, device: str = "cpu", retries: int = 1,
                create_folder: bool = False, block_rows: Optional[int] = None) -> BatchPlan:
    """A plan with one unit per input raster: ``<stem>_classes.tif`` (+ ``<stem>_confidence.tif``).

    Refuses before any work what would lose outputs: no input, two inputs with the same file stem (one map
    would overwrite the other), an output that is an input, a missing model file, an output folder that is
    missing (unless ``create_folder``: :func:`run_batch` creates it) or not writable.

    ``block_rows``: a scene taller than that is split into row blocks of ``block_rows`` rows, each a unit of its
    own (one large scene over several workers); its map is assembled from them (:func:`assemble_blocks`).
    """
    if not os.path.isfile(model):
        raise UserInputError(f"the model file {model} does not exist: give a .difflc file written by Train classifier")
    paths = find_inputs(inputs, pattern)
    if not paths:
        raise UserInputError(f"no input raster found in {', '.join(inputs) or 'the inputs'} (pattern {pattern}): "
                             "give raster files or a folder that holds them")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserInputError(f"input raster {missing[0]} does not exist")
    folder = os.path.abspath(output_folder)
    problem = files._folder_problem(folder, create_folder)
    if problem:
        raise UserInputError(f"the output folder {folder} {problem}: choose a folder you can write to")
    if block_rows is not None and block_rows < 1:
        raise UserInputError(f"block rows must be at least 1 (got {block_rows})")
    stems: Dict[str, str] = {}
    units: List[SceneUnit] = []
    assemblies: List[Assembly] = []
    sources = {files.real(p) for p in paths}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserInputError(f"the inputs {stems[stem]} and {path} have the same name '{stem}', so their maps "
                                 f"would both be {stem}{MAP_SUFFIX}: rename one or run them separately")
        stems[stem] = path
        out = os.path.join(folder, stem + MAP_SUFFIX)
        conf = os.path.join(folder, stem + CONFIDENCE_SUFFIX) if confidence else None
        for target in (out, conf):
            if target and files.real(target) in sources:
                raise UserInputError(f"the output {target} is one of the inputs: choose another output folder")
        height = _height(path) if block_rows else None
        if height is None or height <= block_rows:
            units.append(SceneUnit(path, out, conf))
            continue
        parts = []
        for r0 in range(0, height, block_rows):
            r1 = min(r0 + block_rows, height)
            tag = f"{stem}_rows{r0:06d}-{r1:06d}"
            parts.append(len(units))
            units.append(SceneUnit(path, f"{tag}{MAP_SUFFIX}", f"{tag}{CONFIDENCE_SUFFIX}" if conf else None,
                                   rows=(r0, r1)))
        assemblies.append(Assembly(path, out, conf, tuple(parts)))
    return BatchPlan(os.path.abspath(model), tuple(units), folder, device, retries, tuple(assemblies))


def _height(path: str) -> Optional[int]:
    """Rows of a raster, or None when GDAL cannot open it (then it is one unit, and fails as one)."""
    from ..data.raster_io import read_info

    try:
        return int(read_info(path).height)
    except Exception:  # noqa: BLE001 - unreadable: the unit reports it
        return None


# ------------------------------------------------------------------------------------------------- worker side

def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cancel_check(event_name: Optional[str]) -> Callable[[], bool]:
    """A throttled ``is_canceled`` reading the batch's distributed Event (one scheduler round trip a second)."""
    if not event_name:
        return lambda: False
    from distributed import Event

    event = Event(event_name)
    state = {"next": 0.0, "set": False}

    def is_canceled() -> bool:
        now = time.monotonic()
        if not state["set"] and now >= state["next"]:
            state["next"] = now + CANCEL_POLL_S
            try:
                state["set"] = bool(event.is_set())
            except Exception:  # scheduler gone: the batch is over, stop
                state["set"] = True
        return state["set"]

    return is_canceled


def classify_unit(model: str, unit: SceneUnit, staging_root: str, device: str = "cpu",
                  torch_threads: Optional[int] = None, cancel_event: Optional[str] = None) -> Dict:
    """Run on a worker: classify one scene with ``jobs.classify`` into staging, then move it into place.

    The confidence raster moves before the map, so a present map means its scene is complete.
    """
    from . import classify

    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    is_canceled = _cancel_check(cancel_event)
    staging = tempfile.mkdtemp(prefix="unit-", dir=staging_root)
    try:
        staged_map = os.path.join(staging, os.path.basename(unit.output))
        staged_conf = os.path.join(staging, os.path.basename(unit.confidence)) if unit.confidence else None
        t0 = time.perf_counter()
        result = classify(model, unit.hsi, unit.sar, staged_map, staged_conf,
                          Progress(is_canceled=is_canceled), device=device, rows=unit.rows)
        seconds = time.perf_counter() - t0
        if is_canceled():
            raise Cancelled("cancelled by the user")
        from ..data.raster_io import move_into_place

        move_into_place((staged_conf, unit.confidence), (staged_map, unit.output))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    worker = ""
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # called outside a worker (tests, a plain loop)
        pass
    return {"class_pixels": result.class_pixels, "seconds": seconds, "worker": worker, "pid": os.getpid(),
            "peak_rss_mib": _peak_rss_mib(), "torch_threads": _torch_threads()}


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def plugin_here() -> str:
    """Run on a worker by the batch's import check: the folder this plugin is imported from there."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Call:
    """Pickles as the call ``function(*args)`` itself: unpickling it runs the call (pickle's REDUCE)."""

    def __init__(self, function: Callable, args: tuple):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def remote_call(function: Callable, *args) -> Tuple[Callable, bytes]:
    """``(pickle.loads, payload)``: a task a scheduler without the plugin can unpickle (issue 19).

    distributed unpickles the task graph on the scheduler, and a function or dataclass of this package pickles
    as a reference to its module, so a scheduler without the plugin installed refused every scene
    (``ModuleNotFoundError: No module named 'diffusion_landcover'``). Here the task is the standard library's
    ``pickle.loads`` and a bytes payload the scheduler never opens; the worker that runs the task unpickles the
    payload, which imports the plugin there and calls ``function(*args)``: ``client.submit(*remote_call(f, a))``
    runs ``f(a)`` on a worker, its result and exceptions come back as from ``client.submit(f, a)``.
    """
    return pickle.loads, pickle.dumps(_Call(function, args), protocol=pickle.HIGHEST_PROTOCOL)


# ------------------------------------------------------------------------------------------------- client side

def local_torch_threads(n_workers: int) -> int:
    """Cores shared out among the local workers: n workers x threads never exceed the cores."""
    return max(1, available_cores() // max(1, n_workers))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _start(spec: ClusterSpec):
    """A client on the given scheduler, or on a new LocalCluster (returned too, so it can be closed)."""
    import logging

    from distributed import Client, LocalCluster

    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UserInputError(f"cannot reach the Dask scheduler at {spec.scheduler} ({exc}): check the "
                                 "address (tcp://host:8786) and that the scheduler runs") from None
        return client, None
    if spec.n_workers < 1:
        raise UserInputError(f"WORKERS must be at least 1 (got {spec.n_workers})")
    import dask

    # distributed's nannies start workers with OMP/MKL/OpenBLAS at 1 thread and MALLOC_TRIM_THRESHOLD_=65536.
    # Measured on a 320x320 200-band scene (2 cores): the trim threshold alone made classify 3x slower (glibc
    # hands memory back to the OS on every large numpy temporary), and one BLAS thread cost a single worker the
    # second core. So: glibc's default allocator, and the BLAS threads of this worker's share of the cores.
    threads = str(spec.torch_threads or local_torch_threads(spec.n_workers))
    environ = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=int(spec.n_workers), threads_per_worker=1, processes=spec.processes,
                               dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def plugin_location() -> Tuple[str, str]:
    """(the top-level package this plugin is imported as, the folder that holds it) in this process: the
    workers must import it under the same name (``diffusion_landcover`` from QGIS, ``engine`` from the repo)."""
    top = __name__.split(".")[0]
    package_dir = os.path.dirname(os.path.abspath(sys.modules[top].__file__))
    return top, os.path.dirname(package_dir)


def check_workers(client, where: str, wait_s: float = WORKER_WAIT_S) -> Dict[str, str]:
    """Refuse before any work a cluster whose workers cannot run a scene: none connected after ``wait_s``,
    or some that cannot import the plugin (each named, with what to put on their PYTHONPATH).

    Returns {worker address: the folder it imports the plugin from}. The scheduler itself needs no plugin
    (the scenes go as :func:`remote_call` tasks).
    """
    import distributed

    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, OSError):
        raise UserInputError(f"the Dask scheduler at {where} has no worker after {wait_s:.0f} s: start workers "
                             f"with 'dask worker {where} --nworkers <cores> --nthreads 1'") from None
    found = client.run(*remote_call(plugin_here), on_error="return")
    broken = {addr: value for addr, value in found.items() if isinstance(value, BaseException)}
    if broken:
        top, holder = plugin_location()
        first = next(iter(broken.values()))
        raise UserInputError(
            f"{len(broken)} of {len(found)} Dask worker(s) cannot import the plugin as '{top}' "
            f"({', '.join(sorted(broken))}: {_error_text(first)}): start them with the folder that holds {top}/ "
            f"on their PYTHONPATH (here {holder}), the same plugin version, its Python packages (torch, "
            f"scikit-learn, safetensors, GDAL's bindings) and distributed {distributed.__version__}")
    return {addr: str(value) for addr, value in found.items()}


def run_batch(plan: BatchPlan, spec: ClusterSpec = ClusterSpec(), progress: Optional[Progress] = None,
              on_result: Optional[Callable[[UnitResult], None]] = None) -> BatchOutcome:
    """Classify every unit of ``plan`` on the cluster; failed units are retried ``plan.retries`` times.

    ``progress`` reports the share of finished units and is polled for cancel (a :class:`Cancelled` leaves with
    the cluster's work stopped and no partial file); ``on_result`` is called as each unit finishes.
    """
    from distributed import Event, wait

    progress = progress or Progress()
    t0 = time.perf_counter()
    token = uuid.uuid4().hex[:12]
    os.makedirs(plan.output_folder, exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=plan.output_folder)
    client = cluster = None
    futures: Dict = {}  # future -> (unit index, attempt)
    results: Dict[int, UnitResult] = {i: UnitResult(u, False, 0) for i, u in enumerate(plan.units)}
    event = None
    try:
        client, cluster = _start(spec)
        where = spec.scheduler or f"LocalCluster, {spec.n_workers} worker process(es)"
        homes = check_workers(client, spec.scheduler or "the LocalCluster")
        if spec.scheduler:
            progress.log(f"{len(homes)} worker(s) import the plugin from "
                         + ", ".join(sorted(set(homes.values()))))
        startup = time.perf_counter() - t0
        n_workers = len(homes) or spec.n_workers
        threads = spec.torch_threads or (local_torch_threads(spec.n_workers) if cluster is not None else None)
        event = Event(f"difflc-cancel-{token}", client=client)
        scenes = len(plan.units) - sum(len(a.parts) - 1 for a in plan.assemblies)
        progress.log(f"Classifying {scenes} scene(s) as {len(plan.units)} work unit(s) on {where}"
                     + (f", {threads} torch thread(s) per worker" if threads else ""))

        blocks = os.path.join(staging_root, "blocks")  # finished row blocks wait here for their assembly
        os.makedirs(blocks, exist_ok=True)

        def submit(index: int, attempt: int):
            unit = plan.units[index]
            if unit.rows is not None:
                unit = replace(unit, output=os.path.join(blocks, unit.output),
                               confidence=os.path.join(blocks, unit.confidence) if unit.confidence else None)
            future = client.submit(*remote_call(classify_unit, plan.model, unit, staging_root, plan.device, threads,
                                                event.name),
                                   key=f"difflc-{token}-{index}-{attempt}", pure=False, retries=0)
            futures[future] = (index, attempt)
            return future

        pending = {submit(i, 1) for i in range(len(plan.units))}
        finished = 0
        while pending:
            progress.check()
            try:
                done, pending_now = wait(pending, timeout=0.25, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            pending = set(pending_now)
            for future in done:
                index, attempt = futures.pop(future)
                result = results[index]
                result.attempts = attempt
                if future.status == "finished":
                    info = future.result()
                    result.ok, result.class_pixels = True, info["class_pixels"]
                    result.seconds, result.worker = info["seconds"], info["worker"]
                    result.peak_rss_mib = info["peak_rss_mib"]
                else:
                    exc = future.exception()
                    if isinstance(exc, Cancelled):
                        raise Cancelled("cancelled by the user")
                    result.errors.append(_error_text(exc))
                    if attempt <= plan.retries:
                        progress.log(f"{result.unit.hsi} failed ({result.error}); trying it once more")
                        pending.add(submit(index, attempt + 1))
                        continue
                finished += 1
                progress.report(finished / len(plan.units))
                progress.log(f"[{finished}/{len(plan.units)}] "
                             + (f"{result.unit.name} → {os.path.basename(result.unit.output)} "
                                f"({result.seconds:.1f} s on {result.worker or 'a worker'})" if result.ok else
                                f"FAILED {result.unit.hsi} after {result.attempts} attempt(s): {result.error}"))
                if on_result is not None:
                    on_result(result)
        ordered = _assemble_all(plan, results, blocks, progress)
        outcome = BatchOutcome(ordered, time.perf_counter() - t0, n_workers, spec.scheduler or "LocalCluster",
                               startup)
    except BaseException:
        _stop(client, futures, event)
        raise
    finally:
        _close(client, cluster)
        shutil.rmtree(staging_root, ignore_errors=True)
    return outcome


def _assemble_all(plan: BatchPlan, results: Dict[int, UnitResult], blocks: str,
                  progress: Progress) -> List[UnitResult]:
    """Per scene, in plan order: plain units as they are; a block-split scene as one result, assembled when
    every block is done, else failed with its blocks' errors (and no output)."""
    first = {a.parts[0]: a for a in plan.assemblies}
    in_assembly = {i for a in plan.assemblies for i in a.parts}
    ordered: List[UnitResult] = []
    for index in range(len(plan.units)):
        if index in first:
            a = first[index]
            parts = [results[i] for i in a.parts]
            scene = UnitResult(SceneUnit(a.hsi, a.output, a.confidence), all(p.ok for p in parts),
                               max(p.attempts for p in parts), seconds=sum(p.seconds for p in parts),
                               worker=",".join(sorted({p.worker for p in parts if p.worker})),
                               peak_rss_mib=max(p.peak_rss_mib for p in parts))
            for p in parts:
                scene.errors.extend(f"{p.unit.name}: {e}" for e in p.errors if not p.ok)
                for name, n in p.class_pixels.items():
                    scene.class_pixels[name] = scene.class_pixels.get(name, 0) + n
            if scene.ok:
                progress.check()
                try:
                    assemble_blocks(plan.model, a, [(p.unit.rows, os.path.join(blocks, p.unit.output),
                                                     os.path.join(blocks, p.unit.confidence)
                                                     if p.unit.confidence else None) for p in parts])
                    progress.log(f"{os.path.basename(a.hsi)}: {len(parts)} row blocks → {os.path.basename(a.output)}")
                except Cancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported like a failed unit
                    scene.ok = False
                    scene.errors.append(f"assembling the row blocks: {_error_text(exc)}")
            ordered.append(scene)
        elif index not in in_assembly:
            ordered.append(results[index])
    return ordered


def assemble_blocks(model: str, assembly: Assembly, parts: Sequence[Tuple[Tuple[int, int], str, Optional[str]]]) -> None:
    """Write the scene's map (and confidence) from its row blocks with the writer ``jobs.classify`` uses: same
    grid, colour table, category names and ``.qml``; temporary-then-rename, so it is complete or absent."""
    import numpy as np

    from .bundle import load_bundle
    from ..data.labels import ClassInfo
    from ..data.raster_io import ClassifiedWriter, RasterReader, read_info

    metadata, _ = load_bundle(model)
    classes = [ClassInfo.from_dict(c) for c in metadata["classes"]]
    with ClassifiedWriter(assembly.output, read_info(assembly.hsi), classes, assembly.confidence) as writer:
        for (r0, _r1), map_path, conf_path in parts:
            block = RasterReader(map_path, name="row block")  # float32, NaN at the block's nodata
            raw = block.read(0, 0, block.height, block.width)[0]
            values = np.where(np.isnan(raw), -1, raw).astype(np.int64)
            conf = None
            if assembly.confidence:
                conf_block = RasterReader(conf_path, name="row block")
                conf = conf_block.read(0, 0, conf_block.height, conf_block.width)[0]  # NaN → written as −1
            writer.write(r0, 0, values, conf)


def _stop(client, futures, event) -> None:
    """Cancel: tell running scenes to stop (they poll the event), drop queued ones."""
    if client is None:
        return
    try:
        if event is not None:
            event.set()
        if futures:
            client.cancel(list(futures), force=True)
    except Exception:  # the cluster may already be gone; closing it below still stops the work
        pass


def _close(client, cluster) -> None:
    for thing in (client, cluster):
        if thing is None:
            continue
        try:
            thing.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------- command line

def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m engine.jobs.batch MODEL INPUT... -o FOLDER [--workers N | --scheduler ADDRESS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.jobs.batch",
        description="Classify many scenes with one Diffusion Land Cover model on a Dask cluster: one map per "
                    f"input, <stem>{MAP_SUFFIX} (+ .qml, optional <stem>{CONFIDENCE_SUFFIX}).")
    parser.add_argument("model", help="model file (.difflc) written by Train classifier")
    parser.add_argument("inputs", nargs="+", help="HSI rasters and/or folders (expanded with --glob)")
    parser.add_argument("-o", "--output-folder", required=True, help="folder for the maps (must exist)")
    parser.add_argument("--glob", default=DEFAULT_PATTERN, help=f"pattern for folders (default {DEFAULT_PATTERN})")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--scheduler", default=None,
                        help="address of a running Dask scheduler (e.g. tcp://host:8786); --workers is then ignored")
    parser.add_argument("--confidence", action="store_true", help=f"also write <stem>{CONFIDENCE_SUFFIX}")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a failed scene (default 1)")
    parser.add_argument("--block-rows", type=int, default=None,
                        help="split scenes taller than this into row blocks of this many rows, one unit each "
                             "(one large scene over several workers); the map is assembled from them")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch threads per worker (default: cores // workers locally)")
    args = parser.parse_args(argv)
    try:
        plan = plan_scenes(args.model, args.inputs, args.output_folder, args.confidence, args.glob, args.device,
                           args.retries, block_rows=args.block_rows)
        spec = ClusterSpec(args.workers, args.scheduler, True, args.torch_threads)
        outcome = run_batch(plan, spec, Progress(on_message=lambda m: print(m, flush=True)))
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled: no partial output was left", file=sys.stderr)
        return 130
    print(outcome.summary())
    return 0 if not outcome.failed else 1


if __name__ == "__main__":
    sys.exit(main())
