"""Stage 1: the configuration pool. MD with a universal potential over many scenarios, no DFT.

Layout of a pool directory (one set of files per scenario, named after a filesystem-safe form of its id):

- ``<stem>.extxyz``: the snapshots, appended and flushed as they are produced (positions, cell, momenta, energy,
  forces, stress; info ``scenario_id``, ``step``, ``temperature``, ``ensemble``, ``potential``);
- ``<stem>.status.json``: the done-marker, written atomically when the scenario ends: status (``completed`` or
  ``blowup``), steps_done, reason, n_snapshots, wall time and a key of the scenario definition + potential;
- ``<stem>.last_good.extxyz``: for a blow-up, the last frame that passed the checks;
- ``<stem>.progress``: the last snapshot step of a running (or interrupted) scenario;
- ``pool.json``: the campaign manifest (scenario ids in order, potential).

A re-run skips every scenario whose done-marker matches its definition and restarts any other from scratch (its
partial file is truncated, so frames are never duplicated). Everything is validated before any MD starts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms

from alkit._util import atomic_copy, atomic_write
from alkit.errors import AlkitError, ConfigError, InputError
from alkit.io import structure_hash
from alkit.scenarios import Scenario, check_unique_ids, load_scenarios

log = logging.getLogger(__name__)

MANIFEST = "pool.json"
FRAMES_SUFFIX = ".extxyz"
STATUS_SUFFIX = ".status.json"
LAST_GOOD_SUFFIX = ".last_good.extxyz"
PROGRESS_SUFFIX = ".progress"
FINISHED = ("completed", "blowup")


class PoolFailure(AlkitError):
    """Some scenarios failed with an error (not a blow-up); ``report`` holds everything else that was done."""

    def __init__(self, message: str, report: "PoolReport"):
        super().__init__(message)
        self.report = report


# ----------------------------------------------------------------------------------------------------------- files
def scenario_stem(scenario_id: str) -> str:
    """Filesystem-safe, unique file stem for a scenario id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", scenario_id).strip("._") or "scenario"
    if safe != scenario_id or len(safe) > 100:
        safe = f"{safe[:100]}-{hashlib.sha1(scenario_id.encode()).hexdigest()[:8]}"
    return safe


def scenario_paths(out_dir: str | os.PathLike, scenario_id: str) -> dict[str, Path]:
    stem = Path(out_dir) / scenario_stem(scenario_id)
    return {
        "frames": stem.with_name(stem.name + FRAMES_SUFFIX),
        "status": stem.with_name(stem.name + STATUS_SUFFIX),
        "last_good": stem.with_name(stem.name + LAST_GOOD_SUFFIX),
        "progress": stem.with_name(stem.name + PROGRESS_SUFFIX),
    }


def scenario_key(scenario: Scenario, potential: str) -> str:
    """Hash of a scenario's definition and the potential: a done-marker only counts if this matches."""
    payload = json.dumps({"scenario": scenario.to_dict(), "potential": potential}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def scenario_seed(scenario_id: str, seed: int = 0) -> int:
    """A stable per-scenario MD seed."""
    return int(hashlib.sha256(f"{seed}:{scenario_id}".encode()).hexdigest()[:8], 16)


def read_status(out_dir: str | os.PathLike, scenario_id: str) -> dict | None:
    """The done-marker of a scenario, or None if it has not finished (or the marker is unreadable)."""
    path = scenario_paths(out_dir, scenario_id)["status"]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_frames(path: Path) -> list[Atoms]:
    """All complete frames of an extxyz file; a frame torn by a kill at the end is dropped."""
    from ase.io import iread, read

    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        frames = read(str(path), index=":", format="extxyz")
        return frames if isinstance(frames, list) else [frames]
    except Exception:  # a torn last frame: keep what parses
        out = []
        try:
            for frame in iread(str(path), index=":", format="extxyz"):
                out.append(frame)
        except Exception:
            log.warning("%s: dropped a torn frame after %d good ones", path, len(out))
        return out


# ------------------------------------------------------------------------------------------------ worker task
def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def run_scenario(
    scenario: Scenario | dict,
    out_dir: str | os.PathLike,
    potential: str = "m3gnet",
    model_dir: str | None = None,
    seed: int = 0,
    md_kwargs: dict | None = None,
    threads: int = 1,
    key: str | None = None,
) -> dict:
    """Run one scenario, streaming its snapshots to disk; return (and write) its status record.

    This is the task sent to the executor: all arguments are picklable, the calculator is built here.
    """
    from ase.io import write

    from alkit._compat import set_torch_threads
    from alkit.md import run_md
    from alkit.potentials import make_calculator

    if isinstance(scenario, dict):
        scenario = Scenario.from_dict(scenario)
    key = key or scenario_key(scenario, potential)
    paths = scenario_paths(out_dir, scenario.id)
    paths["status"].unlink(missing_ok=True)
    paths["last_good"].unlink(missing_ok=True)
    t0 = time.perf_counter()
    calc = make_calculator(potential, model_dir)
    if "torch" in sys.modules:
        set_torch_threads(threads)
    t_md, cpu_md = time.perf_counter(), time.thread_time()
    info = {"scenario_id": scenario.id, "temperature": float(scenario.temperature),
            "ensemble": scenario.ensemble, "potential": potential}

    with open(paths["frames"], "w", encoding="utf-8") as fh:  # "w": an interrupted earlier attempt is discarded

        def on_snapshot(step: int, frame: Atoms) -> None:
            frame.info.update(info, step=int(step))
            write(fh, frame, format="extxyz")
            fh.flush()
            paths["progress"].write_text(str(step))

        result = run_md(
            scenario.atoms,
            calc,
            scenario.temperature,
            ensemble=scenario.ensemble,
            steps=scenario.steps,
            timestep_fs=scenario.timestep_fs,
            snapshot_interval=scenario.snapshot_interval,
            pressure_gpa=scenario.pressure_gpa,
            seed=scenario_seed(scenario.id, seed),
            on_snapshot=on_snapshot,
            **(md_kwargs or {}),
        )
        fh.flush()
        os.fsync(fh.fileno())
    wall = time.perf_counter() - t0
    record = {
        "scenario_id": scenario.id,
        "status": result.status,
        "steps_done": result.steps_done,
        "steps": int(scenario.steps),
        "n_snapshots": result.n_snapshots,
        "reason": result.reason,
        "temperature": float(scenario.temperature),
        "ensemble": scenario.ensemble,
        "n_atoms": len(scenario.atoms),
        "formula": scenario.atoms.get_chemical_formula(),
        "potential": potential,
        "key": key,
        "wall_time_s": round(wall, 3),
        "md_time_s": round(time.perf_counter() - t_md, 3),
        "md_cpu_s": round(time.thread_time() - cpu_md, 3),  # CPU of the MD thread (torch runs on it)
        "torch_threads": _torch_threads(),
        "frames_file": paths["frames"].name,
    }
    if result.status == "blowup":
        last = result.last_good
        last.info.update(info, step=int(result.steps_done), blowup_reason=result.reason)
        write(str(paths["last_good"]), last, format="extxyz")
        record["last_good_file"] = paths["last_good"].name
        log.warning("scenario %s blew up after %d steps: %s", scenario.id, result.steps_done, result.reason)
    atomic_write(paths["status"], json.dumps(record, indent=1))
    paths["progress"].unlink(missing_ok=True)
    return record


# ------------------------------------------------------------------------------------------------------ campaign
@dataclass
class PoolReport:
    """What a :func:`run_pool` call did. ``statuses`` has the done-marker of every finished scenario of the call
    (run now or skipped); ``failed`` maps ids to the error of scenarios that did not finish."""

    out_dir: Path
    statuses: dict[str, dict] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s.get("status") == status)

    @property
    def n_completed(self) -> int:
        return self.count("completed")

    @property
    def n_blowup(self) -> int:
        return self.count("blowup")

    @property
    def n_snapshots(self) -> int:
        return sum(int(s.get("n_snapshots", 0)) for s in self.statuses.values())

    @property
    def new_snapshots(self) -> int:
        return sum(int(self.statuses[i].get("n_snapshots", 0)) for i in self.ran if i in self.statuses)

    @property
    def new_steps(self) -> int:
        return sum(int(self.statuses[i].get("steps_done", 0)) for i in self.ran if i in self.statuses)

    @property
    def snapshots_per_s(self) -> float:
        return self.new_snapshots / self.wall_time_s if self.wall_time_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.new_steps / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"pool {self.out_dir}: {len(self.ran)} run, {len(self.skipped)} skipped, {len(self.failed)} failed; "
            f"{self.n_completed} completed, {self.n_blowup} blow-ups, {self.n_snapshots} snapshots; "
            f"{self.wall_time_s:.1f} s ({self.steps_per_s:.1f} steps/s, {self.snapshots_per_s:.2f} snapshots/s)"
        )


def as_scenarios(scenarios: Iterable[Scenario | dict] | str | os.PathLike) -> list[Scenario]:
    """Scenarios from Scenario objects, their dicts, or a scenario file; ids checked unique."""
    if isinstance(scenarios, (str, os.PathLike)):
        return load_scenarios(scenarios)
    out = []
    for s in scenarios:
        if isinstance(s, Scenario):
            out.append(s)
        elif isinstance(s, dict):
            out.append(Scenario.from_dict(s))
        else:
            raise ConfigError(f"expected a Scenario or its dict, got {type(s).__name__}")
    check_unique_ids(out)
    return out


def validate_campaign(scenarios: Sequence[Scenario], potential: str, model_dir=None, min_dist: float = 0.5) -> str | None:
    """Check everything a campaign needs before any MD; return the resolved model directory (or None)."""
    from alkit.config import model_root
    from alkit.io import check_structure
    from alkit.potentials import check_potential

    check_potential(potential, model_dir)
    if not scenarios:
        raise ConfigError("no scenarios to run")
    for s in scenarios:
        s.validate()
        check_structure(s.atoms, min_dist=min_dist, name=f"scenario {s.id!r}")
    if potential.lower() == "m3gnet":
        return str(model_root(model_dir))  # absolute, so workers with another cwd/env find it
    return str(Path(model_dir).resolve()) if model_dir is not None else None


def _update_manifest(out_dir: Path, scenarios: Sequence[Scenario], potential: str) -> None:
    path = out_dir / MANIFEST
    ids: list[str] = []
    try:
        ids = list(json.loads(path.read_text()).get("scenarios", []))
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    known = set(ids)
    ids += [s.id for s in scenarios if s.id not in known]
    atomic_write(path, json.dumps({"potential": potential, "scenarios": ids}, indent=1))


def run_pool(
    scenarios: Iterable[Scenario | dict] | str | os.PathLike,
    out_dir: str | os.PathLike,
    potential: str = "m3gnet",
    model_dir: str | os.PathLike | None = None,
    executor: Executor | str | None = None,
    progress: bool = True,
    n_workers: int | None = None,
    seed: int = 0,
    md_kwargs: dict[str, Any] | None = None,
    threads_per_worker: int = 1,
    raise_on_failure: bool = True,
) -> PoolReport:
    """Run every scenario not already finished in ``out_dir`` and return a :class:`PoolReport`.

    ``executor`` is an Executor (used, not shut down), an executor kind for :func:`alkit.executors.make_executor`
    (``"process"``, ``"dask"``, ``"serial"``) or None (local processes, ``n_workers`` of them, default
    ``min(#scenarios, #cpus)``). ``md_kwargs`` go to :func:`alkit.md.run_md` (e.g. ``thermostat``, ``barostat``,
    ``max_temperature_factor``). A blow-up ends only its scenario. Scenarios that fail with an error are left
    unfinished (a re-run retries them) and, if ``raise_on_failure``, raise :class:`PoolFailure` at the end.
    """
    from alkit.executors import make_executor

    t0 = time.perf_counter()
    scenarios = as_scenarios(scenarios)
    resolved_model_dir = validate_campaign(scenarios, potential, model_dir)
    if md_kwargs:
        from alkit.md import BAROSTATS, THERMOSTATS

        if md_kwargs.get("thermostat", "langevin") not in THERMOSTATS:
            raise ConfigError(f"thermostat {md_kwargs['thermostat']!r} is not one of {THERMOSTATS}")
        if md_kwargs.get("barostat", "mtk") not in BAROSTATS:
            raise ConfigError(f"barostat {md_kwargs['barostat']!r} is not one of {BAROSTATS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _update_manifest(out, scenarios, potential)

    report = PoolReport(out_dir=out)
    todo: list[tuple[Scenario, str]] = []
    for s in scenarios:
        key = scenario_key(s, potential)
        status = read_status(out, s.id)
        if status and status.get("status") in FINISHED and status.get("key") == key:
            report.skipped.append(s.id)
            report.statuses[s.id] = status
        else:
            if status:
                log.info("scenario %s changed since its last run (or used another potential): re-running", s.id)
            todo.append((s, key))
    if report.skipped:
        log.info("%d scenarios already finished in %s: skipped", len(report.skipped), out)
    if not todo:
        report.wall_time_s = time.perf_counter() - t0
        return report

    if executor is None or isinstance(executor, str):
        kind = executor or "process"
        workers = n_workers or min(len(todo), os.cpu_count() or 1)
        with make_executor(kind, n_workers=workers, threads_per_worker=threads_per_worker) as ex:
            _run_all(ex, todo, out, potential, resolved_model_dir, seed, md_kwargs, threads_per_worker, progress, report)
    else:
        _run_all(executor, todo, out, potential, resolved_model_dir, seed, md_kwargs, threads_per_worker, progress,
                 report)
    report.wall_time_s = time.perf_counter() - t0
    log.info(report.summary())
    if report.failed and raise_on_failure:
        first = next(iter(report.failed.items()))
        raise PoolFailure(f"{len(report.failed)} scenarios failed (first: {first[0]}: {first[1]}); "
                          "a re-run retries them", report)
    return report


def adopt_pool(source_dir: str | os.PathLike, out_dir: str | os.PathLike,
               scenarios: Iterable[Scenario | dict], potential: str = "m3gnet") -> list[str]:
    """Copy into ``out_dir`` every scenario that ``source_dir`` (another pool directory) finished with the same
    definition and potential; return their ids. :func:`run_pool` then skips them and runs only the rest.

    Why: a repeated comparison (several seeds x two modes) must share one pool, so the universal-potential MD is paid
    once and the modes differ only by what AL does with the same configurations. Files are copied, not linked, so
    either run directory can be moved or deleted alone; the done-marker is written last, so a kill mid-copy leaves a
    scenario that is simply run again.
    """
    src, out = Path(source_dir), Path(out_dir)
    if not src.is_dir():
        raise ConfigError(f"--pool-from: {src} is not a directory")
    scenarios = as_scenarios(scenarios)
    out.mkdir(parents=True, exist_ok=True)
    adopted: list[str] = []
    for s in scenarios:
        key = scenario_key(s, potential)
        status = read_status(src, s.id)
        if not status or status.get("status") not in FINISHED or status.get("key") != key:
            continue
        mine = read_status(out, s.id)
        if mine and mine.get("key") == key and mine.get("status") in FINISHED:
            adopted.append(s.id)
            continue
        a, b = scenario_paths(src, s.id), scenario_paths(out, s.id)
        for part in ("frames", "last_good", "status"):
            if a[part].is_file():
                atomic_copy(a[part], b[part])
        adopted.append(s.id)
    if not adopted:
        raise ConfigError(f"--pool-from: {src} holds no finished scenario of this campaign (same definition and "
                          f"potential {potential!r}); point it at a run directory's pool/")
    _update_manifest(out, scenarios, potential)
    return adopted


def _progress_step(out: Path, scenario_id: str) -> int:
    try:
        return int(scenario_paths(out, scenario_id)["progress"].read_text() or 0)
    except (OSError, ValueError):
        return 0


def _run_all(ex: Executor, todo, out: Path, potential, model_dir, seed, md_kwargs, threads, progress, report) -> None:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    futures: dict[Future, Scenario] = {}
    for s, key in todo:
        fut = ex.submit(run_scenario, s.to_dict(), str(out.resolve()), potential, model_dir, seed, md_kwargs,
                        threads, key)
        futures[fut] = s
    pending = set(futures)
    steps_finished = 0
    bar = tqdm(total=len(futures), unit="scenario", desc="pool", disable=not progress, dynamic_ncols=True)
    try:
        while pending:
            done, pending = wait(pending, timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in done:
                s = futures[fut]
                try:
                    record = fut.result()
                except Exception as exc:  # a bug or a dead worker, not a blow-up: leave it unfinished
                    report.failed[s.id] = f"{type(exc).__name__}: {exc}"
                    log.error("scenario %s failed: %s", s.id, report.failed[s.id])
                    scenario_paths(out, s.id)["progress"].unlink(missing_ok=True)
                else:
                    report.statuses[s.id] = record
                    report.ran.append(s.id)
                    steps_finished += int(record.get("steps_done", 0))
                bar.update(1)
            running = sum(_progress_step(out, futures[f].id) for f in pending) if pending else 0
            elapsed = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix({"steps/s": f"{(steps_finished + running) / elapsed:.1f}", "blowups": report.n_blowup,
                             "failed": len(report.failed)}, refresh=False)
            bar.refresh()
    finally:
        bar.close()
        for fut in pending:
            fut.cancel()


# --------------------------------------------------------------------------------------------------- reading
def _manifest_ids(out: Path) -> list[str]:
    try:
        return list(json.loads((out / MANIFEST).read_text())["scenarios"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return []


def pool_status(out_dir: str | os.PathLike) -> list[dict]:
    """Per-scenario state of a pool directory: the done-marker, or ``partial`` (interrupted or still running, with
    the last snapshot step and frames on disk) or ``pending``."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"pool directory {out} does not exist")
    ids = _manifest_ids(out)
    known = set(ids)
    for p in sorted(out.glob("*" + STATUS_SUFFIX)):  # pools written without a manifest
        try:
            sid = json.loads(p.read_text())["scenario_id"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        if sid not in known:
            ids.append(sid)
            known.add(sid)
    rows = []
    for sid in ids:
        status = read_status(out, sid)
        if status is not None:
            rows.append(status)
            continue
        paths = scenario_paths(out, sid)
        if paths["frames"].is_file():
            rows.append({"scenario_id": sid, "status": "partial", "steps_done": _progress_step(out, sid),
                         "reason": "interrupted or running"})
        else:
            rows.append({"scenario_id": sid, "status": "pending", "steps_done": 0, "reason": ""})
    return rows


def load_pool(out_dir: str | os.PathLike, scenario_ids: Sequence[str] | None = None,
              finished_only: bool = False) -> list[Atoms]:
    """All snapshots of a pool directory (in manifest order), each with ``info['scenario_id']`` and
    ``info['step']`` and its energy/forces/stress. ``finished_only`` skips scenarios without a done-marker."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"pool directory {out} does not exist")
    if scenario_ids is None:
        ids = [row["scenario_id"] for row in pool_status(out)]
        if not ids:  # no manifest, no markers: every frames file
            files = sorted(p for p in out.glob("*" + FRAMES_SUFFIX) if not p.name.endswith(LAST_GOOD_SUFFIX))
            return [f for p in files for f in _read_frames(p)]
    else:
        ids = list(scenario_ids)
    frames: list[Atoms] = []
    for sid in ids:
        paths = scenario_paths(out, sid)
        if scenario_ids is not None and not paths["frames"].is_file():
            raise InputError(f"pool {out} has no snapshots for scenario {sid!r}")
        if finished_only and read_status(out, sid) is None:
            continue
        for frame in _read_frames(paths["frames"]):
            frame.info.setdefault("scenario_id", sid)
            frame.info["step"] = int(frame.info.get("step", -1))
            frames.append(frame)
    return frames


def pool_digest(frames: Sequence[Atoms]) -> str:
    """A short content hash of the pool: :func:`alkit.io.structure_hash` of every snapshot, in order.

    Why: a comparison is only fair when its campaigns chose from the same configurations. Runs that share a pool
    directory (``--pool-from``) or rebuild it identically (same scenarios, potential and seed, on another machine
    or day) get the same digest, and ``alkit compare`` says whether its runs do.
    """
    h = hashlib.sha256()
    for frame in frames:
        h.update(structure_hash(frame).encode("ascii"))
    return h.hexdigest()[:16]


def _encode(encoder, frames: Sequence[Atoms]) -> np.ndarray:
    if hasattr(encoder, "transform"):
        X = encoder.transform(list(frames))
    elif callable(encoder):
        X = encoder(list(frames))
    else:
        raise ConfigError(f"encoder {type(encoder).__name__} has no .transform and is not callable")
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] != len(frames):
        raise InputError(f"encoder returned shape {X.shape} for {len(frames)} structures (want (N, d))")
    return X


def downsample(frames: Sequence[Atoms], encoder, n_per_trajectory: int, seed: int = 0) -> list[int]:
    """Indices into ``frames`` kept by per-trajectory DIRECT sampling: for each ``info['scenario_id']``, its
    frames are encoded and clustered into ``n_per_trajectory`` BIRCH clusters, keeping the snapshot closest to each
    centroid (k=1). Trajectories with at most ``n_per_trajectory`` frames are kept whole. Sorted indices."""
    from alkit.direct import DIRECTSampler

    if int(n_per_trajectory) < 1:
        raise ConfigError(f"n_per_trajectory must be >= 1, got {n_per_trajectory}")
    groups: dict[str, list[int]] = {}
    for i, frame in enumerate(frames):
        groups.setdefault(str(frame.info.get("scenario_id", "")), []).append(i)
    big = [idx for idx in groups.values() if len(idx) > n_per_trajectory]
    keep: list[int] = [i for idx in groups.values() if len(idx) <= n_per_trajectory for i in idx]
    if big:
        flat = [i for idx in big for i in idx]
        X = _encode(encoder, [frames[i] for i in flat])
        row = {i: r for r, i in enumerate(flat)}
        for idx in big:
            Xg = X[[row[i] for i in idx]]
            sampler = DIRECTSampler(n_clusters=int(n_per_trajectory), k=1, random_state=seed).fit(Xg)
            keep.extend(idx[int(j)] for j in np.asarray(sampler.selected_indices_).ravel())
    return sorted(set(keep))
