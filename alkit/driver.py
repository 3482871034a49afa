"""The active-learning driver: one object that owns the whole method and survives crashes.

pool (universal-potential MD) -> encode -> fit DIRECT -> seed selection -> label -> fit MTP -> MTP MD on every
scenario with gamma monitoring -> re-select extrapolative structures through the same fitted DIRECT sampler under a
budget -> label -> refit -> ... until every scenario is stable or ``max_iterations`` is reached.

``mode="scratch"`` is the paper's "case 2": the initial training set is the scenarios' starting structures and the
same loop follows. Both modes write the same records (store, event log, per-iteration potentials) so they compare.

Crash safety: every structure, label and per-scenario exploration result is committed to the SQLite store as soon as
it exists, and every finished stage is recorded there; re-running the same command resumes at the first unfinished
stage without losing or duplicating a label.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from alkit.campaign import MODES, ALConfig, format_changes, resume_changes  # noqa: F401 (re-exported)
from alkit.errors import AlkitError, ConfigError
from alkit.events import EventLog, read_events
from alkit.scenarios import Scenario, load_scenarios, save_scenarios

log = logging.getLogger(__name__)

# config.json digest -> (ALConfig field, the file in the run directory that holds the definitions)
_SCENARIO_FILES = {"scenarios_sha256": ("scenarios", "scenarios.json"),
                   "pool_scenarios_sha256": ("pool_scenarios", "pool_scenarios.json")}

# --------------------------------------------------------------------------------------------------------------
# worker functions (module level so process and Dask executors can pickle them)


def _explore_worker(backend, model_dir: str, scenario: dict, settings) -> dict:
    """Explore one scenario with the backend in a worker process (module level: executors pickle it)."""
    from alkit._compat import set_torch_threads

    set_torch_threads(1)
    out = backend.explore(Path(model_dir), Scenario.from_dict(scenario), settings)
    rec = out.to_record()
    rec["collected"] = out.collected
    return rec


def _seed_for(scenario_id: str, iteration: int, seed: int) -> int:
    h = hashlib.sha256(f"{scenario_id}:{iteration}:{seed}".encode()).hexdigest()
    return int(h[:8], 16)


# --------------------------------------------------------------------------------------------------------------


class ActiveLearningDriver:
    """Owns the loop. ``ActiveLearningDriver(config, run_dir).run()`` starts or resumes a campaign."""

    def __init__(self, config: ALConfig, run_dir: str | os.PathLike, pool_from: str | os.PathLike | None = None):
        """``pool_from``: another run directory (or its ``pool/``) whose finished pool scenarios, and encoder cache,
        this run adopts instead of re-running them: how the campaigns of a repeated comparison share one pool."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.pool_from = pool_from

    # ---- paths ------------------------------------------------------------------------------------------------
    @property
    def store_path(self) -> Path:
        return self.run_dir / "store.sqlite"

    def iter_dir(self, it: int) -> Path:
        return self.run_dir / "iterations" / f"iter_{it:03d}"

    # ---- set-up -----------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Check everything that can be checked before any work starts: every configuration field, every component
        (labeller, models, MTP level, MD engine, executor), the run directory, and the resume contract."""
        cfg = self.config
        cfg.validate()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"run directory {self.run_dir} is not writable: {exc}") from exc
        self._check_components()
        if self.pool_from is not None:
            self._pool_source()  # a wrong path fails now, with one line
        cfg_file = self.run_dir / "config.json"
        new = cfg.to_json()
        self.config_changes: list = []
        if cfg_file.exists():
            try:
                old = json.loads(cfg_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{cfg_file} is unreadable ({exc}); this run directory cannot be resumed") from None
            unsafe, safe = resume_changes(old, new)
            if unsafe and {k for k, _, _ in unsafe} <= set(_SCENARIO_FILES):
                cfg = self._stored_scenarios(cfg, old, [k for k, _, _ in unsafe])
                new = cfg.to_json()
                unsafe, safe = resume_changes(old, new)
            if unsafe:
                raise ConfigError(
                    f"run directory {self.run_dir} holds a campaign with another configuration; refusing to resume "
                    f"it with changed {', '.join(k for k, _, _ in unsafe)} ({format_changes(unsafe)}). Use another "
                    "--run-dir, or re-run with the stored configuration")
            if safe:
                from alkit._util import atomic_write

                atomic_write(cfg_file, json.dumps(new, indent=1))
                self.config_changes = safe
                log.info("resuming with changed %s", format_changes(safe))
        else:
            save_scenarios(self.run_dir / "scenarios.json", cfg.scenarios)
            if cfg.pool_scenarios is not None:
                save_scenarios(self.run_dir / "pool_scenarios.json", cfg.pool_scenarios)
            from alkit._util import atomic_write

            atomic_write(cfg_file, json.dumps(new, indent=1))  # last: its presence means "campaign defined"

    def _stored_scenarios(self, cfg: ALConfig, stored: dict, keys: list[str]) -> ALConfig:
        """``cfg`` with the run's stored scenario definitions where the rebuilt ones differ from them only by
        round-off, so a run moved to another machine (or numpy) resumes on exactly the structures it started with;
        otherwise ``cfg`` unchanged (and the caller refuses)."""
        from dataclasses import replace

        from alkit.campaign import scenarios_digest
        from alkit.scenarios import roundoff_difference

        changes = {}
        for key in keys:
            field, fname = _SCENARIO_FILES[key]
            path = self.run_dir / fname
            rebuilt = getattr(cfg, field)
            if rebuilt is None or not path.is_file():
                return cfg
            kept = load_scenarios(path)
            if scenarios_digest(kept) != stored.get(key):
                log.warning("%s does not match the digest in config.json: not adopting it", path)
                return cfg
            worst, diff = roundoff_difference(rebuilt, kept)
            if diff is not None:
                log.info("rebuilt scenarios differ from %s: %s", fname, diff)
                return cfg
            log.info("the rebuilt %s differ from %s only by round-off (largest difference %.1e): resuming with "
                     "the stored definitions", field.replace("_", " "), fname, worst)
            changes[field] = kept
        self.config = replace(cfg, **changes)
        return self.config

    def _check_components(self) -> None:
        """Cheap checks that each configured component can be built (no model is loaded, no MD is run)."""
        cfg = self.config
        from alkit.label import make_labeller

        self.labeller = make_labeller(cfg.labeller, **cfg.labeller_kwargs)
        self.labeller.check()
        if cfg.needs_sampler:
            from alkit.potentials import check_potential

            check_potential(cfg.pool_potential, cfg.model_dir)  # fails now, not after hours of work
        if cfg.needs_encoder:
            from alkit.encode import check_encoder

            check_encoder(cfg.encoder, cfg.model_dir)
        from alkit.backend import make_backend, make_selector

        self.backend = make_backend(cfg)
        self.backend.check()
        self.selector = make_selector(cfg.reselection)
        if cfg.executor == "dask":
            try:
                import distributed  # noqa: F401
            except ImportError as exc:
                raise ConfigError(f"ALConfig.executor = 'dask' needs dask[distributed]: {exc}") from None

    def _open(self):
        from alkit.store import RunStore

        self.store = RunStore(self.store_path)
        self.events = EventLog(self.run_dir)

    # ---- stage bookkeeping ------------------------------------------------------------------------------------
    def _done(self, key: str) -> Any:
        return self.store.get_state(f"done:{key}")

    def _mark(self, key: str, value: Any = True) -> None:
        self.store.set_state(f"done:{key}", value)

    @contextmanager
    def _stage(self, it: int, stage: str, wall: dict) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("iteration %d: %s ...", it, stage)
        yield
        dt = time.perf_counter() - t0
        wall[stage] = wall.get(stage, 0.0) + dt
        self.store.set_state(f"wall:{it}", wall)  # a resumed run keeps the time of the stages done before a kill
        self.events.emit("stage", iteration=it, stage=stage, seconds=dt)
        log.info("iteration %d: %s done in %.1f s", it, stage, dt)

    # ---- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Start or resume the campaign; return the summary of :meth:`status`."""
        self._prepare()
        with self._exclusive():
            return self._run()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory: two drivers on one campaign would label twice.

        ``flock`` is released by the kernel when the process dies, so a kill -9 never leaves a stale lock.
        (Seen: a script without a ``__main__`` guard re-ran the campaign in every spawned worker.)
        """
        import fcntl

        fh = open(self.run_dir / "lock", "a+")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another alkit process is running the campaign in {self.run_dir}") from None
            yield
        finally:
            fh.close()

    def _run(self) -> dict:
        from alkit.executors import make_executor

        cfg = self.config
        self._open()
        if not self._done("started"):
            self.events.emit("run_started", mode=cfg.mode, name=cfg.name, recipe=cfg.recipe, preset=cfg.preset,
                             config=cfg.to_json())
            self._mark("started")
        else:
            log.info("resuming campaign in %s", self.run_dir)
            if self.config_changes:
                self.events.emit("config_changed", changes=[list(c) for c in self.config_changes])
        finished = self._done("finished")
        if (finished and not finished.get("converged") and finished.get("reason") == "max_iterations reached"
                and cfg.max_iterations > int(finished.get("iterations", 0))):
            # extending a run that stopped at its iteration cap: it is open again, and its final state, exit code
            # and report will be the new outcome
            self._mark("finished", None)
            self.events.emit("run_reopened", previous=finished, max_iterations=cfg.max_iterations)
            log.info("re-opening the campaign (it stopped at %d iterations; max_iterations is now %d)",
                     finished.get("iterations"), cfg.max_iterations)
        with make_executor(cfg.executor, n_workers=cfg.n_workers, address=cfg.dask_address) as executor:
            self.executor = executor
            it = int(self.store.get_state("iteration", 0))
            while True:
                wall: dict[str, float] = dict(self.store.get_state(f"wall:{it}", {}) or {})
                if it == 0:
                    self._initial(wall)
                self._label(it, wall)
                self._fit(it, wall)
                results = self._explore(it, wall)
                n_stable = sum(r["stable"] for r in results)
                converged = n_stable == len(results)
                added = 0
                if not converged and it + 1 < cfg.max_iterations:
                    added = self._reselect(it, wall)
                self._iteration_done(it, results, wall)
                if converged or it + 1 >= cfg.max_iterations or added == 0:
                    reason = "all scenarios stable" if converged else (
                        "max_iterations reached" if it + 1 >= cfg.max_iterations else "no new structures selected")
                    if not self._done("finished"):
                        self.events.emit(
                            "run_finished", converged=converged, iterations=it + 1, reason=reason,
                            labels_cumulative=self.store.count(status="labelled"),
                        )
                        self._mark("finished", {"converged": converged, "iterations": it + 1, "reason": reason})
                    log.info("campaign finished after %d iteration(s): %s", it + 1, reason)
                    if cfg.post_validation:
                        self._validate(it, wall)
                    break
                it += 1
                self.store.set_state("iteration", it)
        summary = self.status()
        self.store.close()
        return summary

    # ---- stages -----------------------------------------------------------------------------------------------
    def _initial(self, wall: dict) -> None:
        cfg = self.config
        if cfg.needs_sampler:
            self._build_pool(wall)
            self._fit_sampler(wall)
        if self._done("seed"):
            return
        if cfg.mode == "direct":
            pool_ids = self.store.get_state("pool_ids")
            sampler = self._sampler()
            chosen = [int(pool_ids[i]) for i in sampler.selected_indices_]
            self.store.mark_selected(chosen, iteration=0, reason="direct-seed")
        else:
            starts = [s.atoms for s in cfg.scenarios]
            ids = self.store.add_structures(starts, source="scratch", iteration=0,
                                            scenario_ids=[s.id for s in cfg.scenarios])
            chosen = sorted(set(ids))
            self.store.mark_selected(chosen, iteration=0, reason="scenario-start")
        log.info("seed set: %d structures (%s)", len(chosen), cfg.mode)
        self._mark("seed", len(chosen))

    def _encoder(self):
        if getattr(self, "_enc", None) is None:
            from alkit.encode import get_encoder

            self._enc = get_encoder(self.config.encoder, cache_dir=str(self.run_dir / "cache"),
                                    model_dir=self.config.model_dir).fit()
        return self._enc

    def _features(self, structures, iteration: int) -> np.ndarray:
        """Encode structures with the campaign's encoder and store their features (add_structures fills in the
        features of structures already stored, matched by hash)."""
        X = np.asarray(self._encoder().transform(structures), dtype=np.float32)
        self.store.add_structures(structures, source="al", iteration=iteration, features=X)
        return X

    def _sampler(self):
        if getattr(self, "_smp", None) is None:
            from alkit.direct import DIRECTSampler

            self._smp = DIRECTSampler.load(self.run_dir / "direct" / "sampler.joblib")
        return self._smp

    def _pool_source(self) -> Path:
        """The pool directory named by ``pool_from`` (a run directory or a pool directory)."""
        src = Path(self.pool_from)
        if (src / "pool").is_dir():
            src = src / "pool"
        if not src.is_dir() or not any(src.glob("*.status.json")):
            raise ConfigError(f"--pool-from {self.pool_from}: no finished pool scenarios there (give a run "
                              "directory whose pool stage has run, or its pool/ folder)")
        if src.resolve() == (self.run_dir / "pool").resolve():
            raise ConfigError(f"--pool-from {self.pool_from} is this run's own pool")
        return src

    def _build_pool(self, wall: dict) -> None:
        if self._done("pool"):
            return
        from alkit.pool import adopt_pool, downsample, load_pool, pool_digest, run_pool

        cfg = self.config
        scenarios = cfg.pool_scenarios or cfg.scenarios
        with self._stage(0, "pool", wall):
            t0 = time.perf_counter()
            if self.pool_from is not None:
                from alkit.encode import merge_cache

                src = self._pool_source()
                adopted = adopt_pool(src, self.run_dir / "pool", scenarios, potential=cfg.pool_potential)
                n_vec = merge_cache(src.parent / "cache", self.run_dir / "cache")
                log.info("pool: adopted %d of %d scenarios from %s (%d cached feature vectors)", len(adopted),
                         len(scenarios), src, n_vec)
                self.events.emit("pool_adopted", source=str(src.resolve()), scenarios=adopted,
                                 cached_vectors=n_vec)
            run_pool(scenarios, self.run_dir / "pool", potential=cfg.pool_potential, model_dir=cfg.model_dir,
                     executor=self.executor, progress=True, seed=cfg.seed)
            frames = load_pool(self.run_dir / "pool")
            if not frames:
                raise ConfigError("the universal-potential MD produced no snapshots: check the pool scenarios")
            if cfg.pool_per_trajectory:
                keep = downsample(frames, self._encoder(), cfg.pool_per_trajectory, seed=cfg.seed)
                frames = [frames[i] for i in keep]
        with self._stage(0, "encode", wall):
            X = np.asarray(self._encoder().transform(frames), dtype=np.float32)
            ids = self.store.add_structures(
                frames, source="pool", iteration=0,
                scenario_ids=[f.info.get("scenario_id") for f in frames], features=X,
            )
        self.store.set_state("pool_ids", [int(i) for i in ids])
        self.events.emit("pool_built", n_structures=len(frames), n_scenarios=len(scenarios),
                         seconds=time.perf_counter() - t0, digest=pool_digest(frames))
        self._mark("pool", len(frames))

    def _fit_sampler(self, wall: dict) -> None:
        if self._done("direct"):
            return
        from alkit.direct import DIRECTSampler, count_distinct, coverage_score

        cfg = self.config
        pool_ids = self.store.get_state("pool_ids")
        X = self.store.features(pool_ids)
        with self._stage(0, "direct", wall):
            n = min(cfg.n_clusters, count_distinct(X, at_least=cfg.n_clusters))  # stops early on big pools
            if n < cfg.n_clusters:
                log.warning("pool has only %d distinct structures: using %d clusters instead of %d", n, n, cfg.n_clusters)
            sampler = DIRECTSampler(n_clusters=n, k=cfg.k, clustering=cfg.clustering, random_state=cfg.seed).fit(X)
            out = self.run_dir / "direct"
            out.mkdir(exist_ok=True)
            sampler.save(out / "sampler.joblib")
            pcs = sampler.transform(X)
            sel = np.asarray(sampler.selected_indices_)
            cov = coverage_score(pcs, pcs[sel], n_bins=50)
            rng = np.random.default_rng(cfg.seed)
            show = np.sort(rng.choice(len(pcs), size=min(len(pcs), 20000), replace=False))
            np.savez(out / "pcs.npz", pool_pcs=pcs[show], selected_pcs=pcs[sel], coverage=cov,
                     explained_variance_ratio=np.asarray(sampler.explained_variance_ratio_))
        self._smp = sampler
        self.events.emit("direct_fitted", n_pcs=int(sampler.n_components_),
                         explained_variance=np.asarray(sampler.explained_variance_ratio_).tolist(),
                         coverage=np.asarray(cov).tolist(), n_clusters=int(n), k=cfg.k, n_selected=int(len(sel)))
        self._mark("direct", True)

    def _label(self, it: int, wall: dict) -> None:
        from alkit.label import label_many

        cfg = self.config
        todo = self.store.to_label()
        if self.store.get_state(f"labels_before:{it}") is None:
            self.store.set_state(f"labels_before:{it}", [self.store.count(status="labelled"),
                                                         self.store.count(status="failed")])
        ok0, failed0 = self.store.get_state(f"labels_before:{it}")
        if todo:
            with self._stage(it, "label", wall):
                structures = self.store.atoms(todo)

                def on_result(j: int, result) -> None:
                    self.store.set_label(todo[j], result)
                    if result.status != "ok":
                        log.warning("label failed for structure %d: %s", todo[j], result.reason)

                label_many(self.labeller, structures, executor=self.executor, timeout=cfg.label_timeout,
                           on_result=on_result, progress=True)
        if not self._done(f"labels:{it}"):
            ok, failed = self.store.count(status="labelled"), self.store.count(status="failed")
            self.events.emit("labels", iteration=it, added=ok - ok0, cumulative=ok, failed=failed - failed0,
                             failed_cumulative=failed)
            self._mark(f"labels:{it}", ok)
        if self.store.count(status="labelled") == 0:
            raise ConfigError("no structure could be labelled: check the labeller (every label failed)")

    def _fit(self, it: int, wall: dict) -> None:
        cfg = self.config
        d = self.iter_dir(it)
        if self._done(f"fit:{it}") and self.backend.is_fitted(d):
            return
        from alkit.io import structure_hash

        d.mkdir(parents=True, exist_ok=True)
        # canonical order (by structure hash), not the order in which workers finished: a campaign must not depend
        # on the executor, the worker count or the machine's load
        labelled = sorted(self.store.atoms(status="labelled"), key=structure_hash)
        train, valid = hash_split(labelled, cfg.valid_fraction)
        prev = self.iter_dir(it - 1) if it > 0 else None
        with self._stage(it, "fit", wall):
            res = self.backend.fit(train, valid, d, previous=prev, seed=cfg.seed)
        self.events.emit("fit", iteration=it, n_train=len(train), n_valid=len(valid),
                         train=res.train, valid=res.valid, seconds=res.seconds,
                         fit_iterations=res.iterations, fit_stopped=res.stopped)
        self._mark(f"fit:{it}", True)

    def _explore(self, it: int, wall: dict) -> list[dict]:
        """MTP MD on every scenario; each finished scenario is committed at once (a restart redoes only the rest)."""
        from concurrent.futures import as_completed

        from tqdm.auto import tqdm

        from alkit.io import min_distance

        cfg = self.config
        d = self.iter_dir(it)
        results: dict[str, dict] = {}
        pending = []
        for scn in cfg.scenarios:
            rec = self.store.get_state(f"explore:{it}:{scn.id}")
            if rec is not None:
                results[scn.id] = rec
            else:
                pending.append(scn)
        if pending:
            from alkit.executors import run_each

            from alkit.backend import ExploreOutcome, ExploreSettings

            with self._stage(it, "explore", wall):
                tasks = []
                for scn in pending:
                    settings = ExploreSettings(
                        steps=int(cfg.explore_steps or scn.steps), gamma_select=cfg.gamma_select,
                        gamma_break=cfg.gamma_break, seed=_seed_for(scn.id, it, cfg.seed),
                        max_collect=cfg.max_collect_per_scenario, max_temperature_factor=cfg.max_temperature_factor)
                    tasks.append((self.backend, str(d), scn.to_dict(), settings))
                bar = tqdm(total=len(tasks), desc=f"explore it{it}", unit="scenario")
                for k, fut in run_each(self.executor, _explore_worker, tasks):
                    scn = pending[k]
                    try:
                        r = fut.result()
                    except AlkitError as exc:
                        # bad input or configuration: an error of the campaign, not an unstable scenario (and
                        # nothing is stored, so a corrected re-run does the work)
                        raise ConfigError(f"exploration of {scn.id} failed on its input: {exc}") from exc
                    except Exception as exc:  # a crashed MD (numerical, LAMMPS, dead worker) counts as unstable
                        log.error("exploration of %s crashed: %s: %s", scn.id, type(exc).__name__, exc)
                        r = ExploreOutcome(id=scn.id, temperature=float(scn.temperature), stable=False, steps_done=0,
                                           steps_total=int(cfg.explore_steps or scn.steps), max_gamma=None,
                                           crashed=True, stop_reason=f"crash: {type(exc).__name__}: {exc}",
                                           ).to_record() | {"collected": []}
                    collected = r.pop("collected")
                    kept = [a for a in collected if min_distance(a) >= cfg.min_candidate_distance]
                    r["dropped"] = len(collected) - len(kept)
                    if r["dropped"]:
                        log.warning("%s: %d collected structure(s) with atoms closer than %.2f Å not kept",
                                    scn.id, r["dropped"], cfg.min_candidate_distance)
                    collected = kept
                    cand_ids: list[int] = []
                    if collected:
                        for a in collected:
                            a.calc = None
                        cand_ids = self.store.add_structures(
                            collected, source="al", iteration=it, scenario_ids=[scn.id] * len(collected),
                            extra=[{"gamma": float(a.info.get("gamma", np.nan)), "step": int(a.info.get("step", -1)),
                                    "before_blowup": bool(a.info.get("before_blowup", False))} for a in collected],
                        )
                        for cid, a in zip(cand_ids, collected):
                            self.store.set_grade(cid, float(a.info.get("gamma", np.nan)), it)
                    r["candidate_ids"] = [int(c) for c in cand_ids]
                    r["gammas"] = [float(a.info.get("gamma", np.nan)) for a in collected]
                    self.store.set_state(f"explore:{it}:{scn.id}", r)
                    results[scn.id] = r
                    bar.update(1)
                    bar.set_postfix(stable=sum(x["stable"] for x in results.values()))
                bar.close()
        ordered = [results[s.id] for s in cfg.scenarios]
        if not self._done(f"explore:{it}"):
            self.events.emit(
                "explore", iteration=it,
                scenarios=[{k: r.get(k) for k in ("id", "temperature", "stable", "steps_done", "steps_total",
                                                  "max_gamma", "stop_reason", "crashed")} for r in ordered],
                gammas=[g for r in ordered for g in r.get("gammas", [])],
                n_collected=sum(len(r.get("candidate_ids", [])) for r in ordered),
            )
            self._mark(f"explore:{it}", True)
        return ordered

    def _reselect(self, it: int, wall: dict) -> int:
        """Choose the next labels among this iteration's extrapolative structures; returns how many were chosen."""
        done = self._done(f"reselect:{it}")
        if done is not None:
            return int(done)
        cfg = self.config
        cand: list[int] = []
        for scn in cfg.scenarios:
            cand.extend(self.store.get_state(f"explore:{it}:{scn.id}").get("candidate_ids", []))
        # a structure met before (labelled or queued) is not a new candidate
        new = set(self.store.ids(status="new", source="al"))
        cand = [c for c in dict.fromkeys(cand) if c in new]
        chosen: list[int] = []
        if cand:
            from alkit.backend import SelectionContext

            with self._stage(it, "select", wall):
                structures = self.store.atoms(cand)
                context = SelectionContext(iteration=it, model_dir=self.iter_dir(it), backend=self.backend,
                                           features=lambda s: self._features(s, it), sampler=self._sampler)
                idx = self.selector.select(structures, cfg.al_budget, context)
                chosen = [cand[int(i)] for i in idx]
                self.store.mark_selected(chosen, iteration=it + 1, reason=f"al-{self.selector.name}")
        log.info("iteration %d: %d extrapolative candidates, %d selected for labelling", it, len(cand), len(chosen))
        self._mark(f"reselect:{it}", len(chosen))
        return len(chosen)

    def _validate(self, it: int, wall: dict) -> None:
        """Post-AL validation (:func:`alkit.validate.validate_run`: test-set errors of every iteration's potential,
        H diffusion, iteration 0's stability) with the recipe's validation spec; its MD results are cached, so a
        rerun redoes nothing."""
        if self._done("validated"):
            return
        from alkit.validate import validate_run

        with self._stage(it, "validate", wall):
            t0 = time.perf_counter()
            validate_run(self.run_dir, executor=self.executor)
        self.events.emit("validated", path=str(self.run_dir / "validation"), seconds=time.perf_counter() - t0)
        self._mark("validated", True)

    def _iteration_done(self, it: int, results: list[dict], wall: dict) -> None:
        self.store.set_state(f"wall:{it}", wall)
        if self._done(f"iteration:{it}"):
            return
        by_t: dict[str, list[bool]] = {}
        for r in results:
            by_t.setdefault(str(int(round(r["temperature"]))), []).append(bool(r["stable"]))
        self.events.emit(
            "iteration_done", iteration=it, n_stable=sum(r["stable"] for r in results), n_scenarios=len(results),
            stable_by_temperature={t: float(np.mean(v)) for t, v in sorted(by_t.items(), key=lambda kv: float(kv[0]))},
            labels_cumulative=self.store.count(status="labelled"),
            failed_cumulative=self.store.count(status="failed"), wall=wall,
            max_gamma=max((r["max_gamma"] for r in results if r.get("max_gamma") is not None), default=None),
        )
        self._mark(f"iteration:{it}", True)

    # ---- reporting --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        return run_status(self.run_dir)


def run_status(run_dir: str | os.PathLike) -> dict:
    """A summary of where a campaign stands, from its event log and store (works while it runs)."""
    from alkit.errors import InputError
    from alkit.events import Explore, IterationDone, RunFinished, RunReopened, iter_events, parse

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise InputError(f"{run_dir} is not an alkit run directory (no config.json)")
    cfg = json.loads((run_dir / "config.json").read_text())
    iters: dict[int, IterationDone] = {}  # the last record of each iteration (a resumed run may write one again)
    explores: dict[int, Explore] = {}
    finished: RunFinished | None = None
    for e in iter_events(run_dir):
        rec = parse(e)
        if isinstance(rec, IterationDone):
            iters[int(rec.iteration)] = rec
        elif isinstance(rec, Explore):
            explores[int(rec.iteration)] = rec
        elif isinstance(rec, RunFinished):
            finished = rec
        elif isinstance(rec, RunReopened):
            finished = None  # extended past its old end: the earlier outcome no longer holds
    walls: dict[int, float] = {}
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "mode": cfg.get("mode"),
        "name": cfg.get("name"),
        "n_scenarios": len(cfg.get("scenarios", [])),
        "iterations_done": len(iters),
        "finished": finished is not None,
        "converged": bool(finished and finished.converged),
        "reason": finished.reason if finished else None,
    }
    if (run_dir / "store.sqlite").exists():
        from alkit.store import RunStore

        st = RunStore(run_dir / "store.sqlite")
        try:
            out["labelled"] = st.count(status="labelled")
            out["failed"] = st.count(status="failed")
            out["queued"] = len(st.to_label())
            out["pool"] = st.count(source="pool")
            for it in iters:  # stage times as stored (they survive a kill; the event's copy may predate it)
                w = st.get_state(f"wall:{it}")
                if w:
                    walls[it] = round(sum(w.values()), 1)
        finally:
            st.close()
    if (run_dir / "pool").is_dir() and not out.get("pool"):
        from alkit.pool import pool_status

        rows = pool_status(run_dir / "pool")
        out["pool_progress"] = {"scenarios": len(rows), "done": sum(r.get("status") not in ("partial", "pending")
                                                                    for r in rows),
                                "running": sum(r.get("status") == "partial" for r in rows)}
    out["iterations"] = [
        {k: getattr(e, k) for k in ("iteration", "n_stable", "n_scenarios", "stable_by_temperature",
                                    "labels_cumulative", "failed_cumulative", "max_gamma")}
        | {"wall_s": walls.get(it, round(sum((e.wall or {}).values()), 1))}
        for it, e in sorted(iters.items())
    ]
    if explores:
        last = explores[max(explores)]
        out["unstable"] = [{k: sc.get(k) for k in ("id", "temperature", "steps_done", "steps_total", "stop_reason")}
                           for sc in last.scenarios or [] if not sc.get("stable")]
        out["unstable_iteration"] = max(explores)
    return out


def format_status(s: dict) -> str:
    pool = f"pool {s.get('pool', '?')}"
    if s.get("pool_progress"):
        p = s["pool_progress"]
        pool = f"pool MD: {p['done']}/{p['scenarios']} scenarios done, {p['running']} running"
    lines = [
        f"run {s['run_dir']}  ({s.get('name')}, mode={s['mode']}, {s['n_scenarios']} scenarios)",
        f"labelled {s.get('labelled', '?')}, failed {s.get('failed', '?')}, queued {s.get('queued', '?')}, {pool}",
    ]
    if s["iterations"]:
        lines.append(f"{'iter':>4} {'stable':>9} {'labels':>7} {'failed':>6} {'max gamma':>10} {'wall s':>8}  stable by T")
        for r in s["iterations"]:
            byt = ", ".join(f"{t} K: {v:.0%}" for t, v in (r["stable_by_temperature"] or {}).items())
            mg = r.get("max_gamma")
            lines.append(
                f"{r['iteration']:>4} {r['n_stable']:>4}/{r['n_scenarios']:<4} {r['labels_cumulative']:>7} "
                f"{r['failed_cumulative']:>6} {(mg if mg is not None else float('nan')):>10.3g} {r['wall_s']:>8}  {byt}"
            )
    else:
        lines.append("no iteration finished yet")
    if s.get("unstable"):
        lines.append(f"unstable in iteration {s['unstable_iteration']}:")
        for u in s["unstable"][:20]:
            lines.append(f"  {u['id']}: {u.get('stop_reason') or '?'} (step {u.get('steps_done')}/{u.get('steps_total')})")
        if len(s["unstable"]) > 20:
            lines.append(f"  ... and {len(s['unstable']) - 20} more")
    if s["finished"]:
        lines.append(f"finished: {'converged' if s['converged'] else 'not converged'} ({s['reason']})")
    else:
        lines.append("in progress (or interrupted: re-run the same command to resume)")
    return "\n".join(lines)


def hash_split(structures, valid_fraction: float) -> tuple[list, list]:
    """Deterministic train/validation split by structure hash: a structure stays on its side across iterations,
    restarts and refits outside the driver. Fewer than 10 structures, or ``valid_fraction <= 0``: no validation set."""
    from alkit.io import structure_hash

    if valid_fraction <= 0 or len(structures) < 10:
        return list(structures), []
    train, valid = [], []
    for a in structures:
        h = int(structure_hash(a)[:8], 16) / 0xFFFFFFFF
        (valid if h < valid_fraction else train).append(a)
    return train, valid
