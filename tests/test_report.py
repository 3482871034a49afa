"""Dashboard (`alkit report`) and comparison (`alkit compare`) on synthetic run directories written with the real
EventLog, checked in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from _runfixture import SETUP_SECONDS, write_run

from alkit.cli import main
from alkit.compare import compare_runs
from alkit.errors import InputError
from alkit.events import EventLog
from alkit.report import build_report, format_seconds, summarize_run

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DASHBOARD_FIGURES = {"stability", "gamma", "labels", "errors", "wall", "pcs", "coverage"}


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A converged DIRECT-seeded run and a from-scratch run that never reaches all-stable."""
    root = tmp_path_factory.mktemp("runs")
    direct = root / "direct_run"
    scratch = root / "scratch_run"
    facts = {
        "direct": write_run(direct, mode="direct", n_iterations=4, all_stable_at=2, seed_labels=30),
        "scratch": write_run(scratch, mode="scratch", n_iterations=5, all_stable_at=None, seed_labels=6,
                             with_pcs=False, seed=1),
    }
    return {"direct": direct, "scratch": scratch, "facts": facts, "root": root}


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: run scripts/install.sh (Debian chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="alkit-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1300,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # the driver path is given, so selenium never runs its driver manager (nothing is downloaded)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


PLOTS_JS = """
return Array.from(document.querySelectorAll('.plotly-graph-div')).map(g => ({
  id: g.id,
  traces: g.data ? g.data.length : -1,
  svgs: g.querySelectorAll('.main-svg').length,
  rendered: g.querySelectorAll('g.trace').length,
  marks: g.querySelectorAll('g.trace path, g.trace .point').length,
  width: g.getBoundingClientRect().width,
  height: g.getBoundingClientRect().height,
}));
"""


def open_page(driver, html: Path) -> list[dict]:
    """Load ``html`` from file://; assert no console errors and no request outside file:/data:; return the plots."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("performance")  # drain: only this page's requests are checked
    driver.get_log("browser")
    driver.get(html.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], f"console errors on {html}: {errors}"
    requests = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            requests.append(msg["params"]["request"]["url"])
    assert requests, "the performance log saw no request at all (is network logging on?)"
    outside = [u for u in requests if not u.startswith(("file://", "data:", "blob:", "about:"))]
    assert outside == [], f"{html} is not self-contained; it requested {outside}"
    n_divs = driver.execute_script("return document.querySelectorAll('.plotly-graph-div').length")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".filter(g => g.querySelector('.main-svg')).length") == n_divs)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], f"console errors while drawing {html}: {errors}"
    return driver.execute_script(PLOTS_JS)


def assert_all_rendered(plots: list[dict]) -> None:
    for p in plots:
        assert p["svgs"] >= 1, f"{p['id']} has no rendered SVG"
        assert p["traces"] >= 1, f"{p['id']} has no data"
        assert p["rendered"] == p["traces"], f"{p['id']}: {p['rendered']} of {p['traces']} traces drawn"
        assert p["marks"] >= p["traces"], f"{p['id']}: traces drawn without any mark"
        assert p["width"] > 300 and p["height"] > 200, f"{p['id']} is collapsed: {p}"


def assert_png(path: Path, min_px: int = 200) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = imread(path)
    assert img.shape[0] >= min_px and img.shape[1] >= min_px, f"{path}: {img.shape}"
    assert float(np.std(img[..., :3])) > 0.01, f"{path} is blank"


# ---------------------------------------------------------------------------------------------------------------
# dashboard
# ---------------------------------------------------------------------------------------------------------------
def test_dashboard_renders_offline_in_chromium(runs, browser, tmp_path):
    index = build_report(runs["direct"], tmp_path / "rep")
    assert index == tmp_path / "rep" / "index.html"
    text = index.read_text()
    # plotly.js embedded exactly once, no script loaded from anywhere
    assert not re.search(r"<script[^>]+src=", text)
    assert text.count("plotly.js v") <= 2 and "Plotly.newPlot" in text

    plots = open_page(browser, index)
    assert {p["id"].removeprefix("plot-") for p in plots} == DASHBOARD_FIGURES
    assert_all_rendered(plots)
    by_id = {p["id"].removeprefix("plot-"): p for p in plots}
    assert by_id["stability"]["traces"] == 2  # one line per temperature
    assert by_id["gamma"]["traces"] == 3  # 300 K, 1000 K, collected structures
    assert by_id["errors"]["traces"] == 4  # train/valid x energy/forces
    assert by_id["pcs"]["traces"] == 3  # pool, DIRECT selection, AL-added
    assert by_id["wall"]["traces"] == 7  # pool encode direct label fit explore select
    # the summary table shows the run's numbers
    body = browser.find_element("tag name", "body").text
    facts = runs["facts"]["direct"]
    assert "direct" in body and f"iteration {facts['all_stable_iteration']} ({facts['labels_to_all_stable']} labels)" in body
    assert "Not shown yet" not in body
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    assert_png(shot)

    for key in DASHBOARD_FIGURES:
        assert_png(tmp_path / "rep" / f"{key}.png")


def test_default_output_dir_and_cli(runs, capsys):
    assert main(["report", str(runs["scratch"])]) == 0
    out = capsys.readouterr().out.strip()
    index = runs["scratch"] / "report" / "index.html"
    assert Path(out) == index.resolve() and index.is_file()
    # a from-scratch run has no DIRECT PCs: those figures are absent and the page says why
    assert not (runs["scratch"] / "report" / "pcs.png").exists()
    assert "not yet" in index.read_text() and "pcs.npz not written yet" in index.read_text()


def test_partial_run_rebuilds_while_running(tmp_path, browser):
    run = tmp_path / "live"
    run.mkdir()
    # zero finished iterations: only the start of the run exists
    EventLog(run).emit("run_started", mode="direct", recipe="synthetic", preset="test", config={})
    s = summarize_run(run)
    assert s["iterations"] == 0 and s["finished"] is False and s["all_stable_iteration"] is None
    index = build_report(run)
    assert "no iteration has finished yet" in index.read_text()
    assert open_page(browser, index) == []  # no plot, but a valid page

    # a run in iteration 1: the seed iteration done, iteration 1 half-way, the last log line torn by a kill
    shutil.rmtree(run)
    write_run(run, mode="direct", n_iterations=4, all_stable_at=None, finished=False, with_pcs=False)
    lines = (run / "events.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if '"iteration_done"' in ln and '"iteration": 1' in ln)
    (run / "events.jsonl").write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    s = summarize_run(run)
    assert s["iterations"] == 1 and s["last_iteration"] == 1 and s["finished"] is False
    index = build_report(run)
    text = index.read_text()
    assert "pcs.npz not written yet" in text and "running" in text
    plots = open_page(browser, index)
    ids = {p["id"].removeprefix("plot-") for p in plots}
    assert ids == DASHBOARD_FIGURES - {"pcs"}  # coverage still comes from the direct_fitted event
    assert_all_rendered(plots)
    stab = next(p for p in plots if p["id"] == "plot-stability")
    # iteration 1's stability comes from its explore record although iteration_done is torn
    assert browser.execute_script("return document.getElementById('plot-stability').data[0].x.length") == 2
    assert stab["traces"] == 2

    # the campaign goes on: the writer finishes the line, DIRECT PCs appear; a rebuild shows them
    (run / "events.jsonl").write_text("".join(lines))
    rng = np.random.default_rng(0)
    (run / "direct").mkdir(exist_ok=True)
    np.savez(run / "direct" / "pcs.npz", pool_pcs=rng.normal(size=(50, 3)), selected_pcs=rng.normal(size=(5, 3)),
             coverage=np.ones(3), explained_variance_ratio=np.array([0.5, 0.3, 0.2]))
    index = build_report(run)
    assert summarize_run(run)["iterations"] == 4
    assert (run / "report" / "pcs.png").is_file()
    assert "pcs.npz not written yet" not in index.read_text()


def test_rebuild_during_concurrent_writes(tmp_path):
    """A writer thread appends the log in torn pieces while the report is rebuilt again and again. At each torn
    ``iteration_done`` line the writer waits for one rebuild, so what that rebuild must show is known."""
    import threading
    import time

    src = tmp_path / "src"
    write_run(src, n_iterations=4, all_stable_at=None, with_pcs=False)
    lines = (src / "events.jsonl").read_text().splitlines(keepends=True)
    live = tmp_path / "live"
    live.mkdir()
    (live / "config.json").write_text((src / "config.json").read_text())
    paused, resume, finished = threading.Event(), threading.Event(), threading.Event()

    def writer():
        try:
            with open(live / "events.jsonl", "a", encoding="utf-8") as fh:
                for ln in lines:
                    fh.write(ln[: len(ln) // 2])
                    fh.flush()
                    if '"iteration_done"' in ln:
                        paused.set()
                        assert resume.wait(60)
                        resume.clear()
                    time.sleep(0.005)
                    fh.write(ln[len(ln) // 2:])
                    fh.flush()
        finally:
            finished.set()

    t = threading.Thread(target=writer)
    t.start()
    at_pauses = []
    try:
        build_report(live)  # free-running, while the writer is appending
        while not finished.is_set():
            if not paused.wait(0.05):
                continue
            if len(at_pauses) in (0, 2):
                index = build_report(live)
                assert "running" in index.read_text()
            at_pauses.append(summarize_run(live)["iterations"])
            paused.clear()
            resume.set()
    finally:
        resume.set()
        t.join()
    assert at_pauses == [0, 1, 2, 3]  # each torn iteration_done line is skipped, the lines before it are read
    assert summarize_run(live)["iterations"] == 4


def test_store_counts_read_only(tmp_path):
    """The optional store.sqlite counts: read while the real store is open, and never leave SQLite files behind."""
    from ase.build import bulk

    from alkit.report import store_counts
    from alkit.store import RunStore

    run = tmp_path / "run"
    write_run(run, n_iterations=1, all_stable_at=None, with_pcs=False, finished=False)
    store = RunStore(run / "store.sqlite")
    ids = store.add_structures([bulk("Ti", "hcp", a=2.95, c=4.68), bulk("Ti", "bcc", a=3.3)], source="pool",
                               iteration=0)
    store.mark_selected(ids[:1], iteration=0, reason="test")
    index = build_report(run)  # while the writer holds the database open
    assert "store.sqlite structures" in index.read_text() and "new 1, selected 1" in index.read_text()
    store.close()
    before = sorted(p.name for p in run.iterdir())
    assert store_counts(run) == {"new": 1, "selected": 1}
    assert sorted(p.name for p in run.iterdir()) == before  # no -wal/-shm created by the reader
    (run / "store.sqlite").write_bytes(b"not a database")
    assert store_counts(run) is None


def test_half_written_pcs_file_is_reported_not_fatal(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["direct"], run, ignore=shutil.ignore_patterns("report"))
    data = (run / "direct" / "pcs.npz").read_bytes()
    (run / "direct" / "pcs.npz").write_bytes(data[: len(data) // 3])
    index = build_report(run)
    assert "unreadable" in index.read_text()
    assert not (run / "report" / "pcs.png").exists()


def test_summary_numbers(runs):
    for key in ("direct", "scratch"):
        s, f = summarize_run(runs[key]), runs["facts"][key]
        assert s["mode"] == key
        assert s["iterations"] == len(f["iterations"])
        assert s["labels"] == f["labels"] and s["failed"] == f["failed"]
        assert s["all_stable_iteration"] == f["all_stable_iteration"]
        assert s["labels_to_all_stable"] == f["labels_to_all_stable"]
        assert s["converged"] is f["converged"]
        assert s["wall_seconds"] == pytest.approx(f["wall"])
        shared = SETUP_SECONDS["pool"] + (SETUP_SECONDS["encode"] if key == "direct" else 0.0)
        assert s["al_wall_seconds"] == pytest.approx(f["wall"] - shared)  # the shared pool is no mode's cost
        assert s["temperatures"] == [300.0, 1000.0]
    assert summarize_run(runs["direct"])["iterations_to_all_stable"] == runs["facts"]["direct"]["all_stable_iteration"] + 1


# ---------------------------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------------------------
def _md_rows(md: str) -> dict[str, dict[str, str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return {r[0]: dict(zip(header, r)) for r in rows}


def test_compare_table_and_page(runs, browser, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs["direct"]), str(runs["scratch"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "compare.md").read_text()
    assert markdown_in(printed, md)
    rows = _md_rows(md)
    fd, fs = runs["facts"]["direct"], runs["facts"]["scratch"]
    d, s = rows["direct_run"], rows["scratch_run"]
    assert d["mode"] == "direct" and s["mode"] == "scratch"
    assert d["all-stable at iteration"] == str(fd["all_stable_iteration"]) == "2"
    assert d["labels to all-stable"] == str(fd["labels_to_all_stable"]) == "54"
    assert d["iterations run"] == "3" and d["status"] == "converged"
    assert s["all-stable at iteration"] == "not reached" and s["labels to all-stable"] == "not reached"
    assert s["iterations run"] == "5" and s["status"] == "not converged"
    assert d["labels (total)"] == str(fd["labels"]) and s["labels (total)"] == str(fs["labels"]) == "54"
    assert d["failed labels"] == "2" and s["failed labels"] == "4"
    assert d["wall time"] == "7 min 13 s"  # 433 s of stages
    assert d["AL wall time"] == "4 min 58 s"  # without the 120 s pool and the 15 s encoding

    plots = open_page(browser, out / "compare.html")
    assert [p["id"] for p in plots] == ["plot-compare_stability", "plot-compare_labels"]
    assert_all_rendered(plots)
    assert plots[0]["traces"] == 4  # 2 temperatures x 2 runs
    assert plots[1]["traces"] == 2
    body = browser.find_element("tag name", "body").text
    assert "not reached" in body and "direct_run" in body
    for png in ("compare_stability.png", "compare_labels.png"):
        assert_png(out / png)


def markdown_in(printed: str, md: str) -> bool:
    return all(line in printed for line in md.splitlines() if line.startswith("|"))


def test_compare_api_same_names_and_running_run(runs, tmp_path):
    # two runs with the same folder name get told apart by their parent; a run with nothing yet still compares
    a = tmp_path / "x" / "run"
    b = tmp_path / "y" / "run"
    write_run(a, n_iterations=2, all_stable_at=1)
    b.mkdir(parents=True)
    EventLog(b).emit("run_started", mode="scratch", recipe="synthetic", preset="test", config={})
    index = compare_runs([a, b], tmp_path / "out")
    rows = _md_rows((tmp_path / "out" / "compare.md").read_text())
    assert set(rows) == {"x/run", "y/run"}
    assert rows["x/run"]["all-stable at iteration"] == "1"
    assert rows["y/run"]["status"] == "running" and rows["y/run"]["iterations run"] == "0"
    assert "No iteration yet in: y/run" in index.read_text()


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------
def test_bad_input_names_the_problem(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(InputError, match="not_a_run.*not an alkit run directory"):
        build_report(empty)
    with pytest.raises(InputError, match="missing_dir.*does not exist"):
        summarize_run(tmp_path / "missing_dir")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="file.txt"):
        compare_runs([f], tmp_path / "o")
    with pytest.raises(InputError, match="at least one"):
        compare_runs([], tmp_path / "o")
    assert main(["report", str(empty)]) == 2
    assert "not_a_run" in capsys.readouterr().err
    assert not (empty / "report").exists()  # nothing written into a non-run
    assert os.listdir(empty) == []


# ---------------------------------------------------------------------------------------------------------------
# repeated comparison: several runs per mode
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Three seeds per mode; one from-scratch run never reaches all-stable (stopped by its iteration cap)."""
    root = tmp_path_factory.mktemp("seeds")
    facts = {}
    for mode, stable_at, labels in (("direct", (1, 2, 2), 30), ("scratch", (3, 4, None), 6)):
        for i, a in enumerate(stable_at):
            name = f"{mode}_s{i}"
            facts[name] = write_run(root / name, mode=mode, n_iterations=5, all_stable_at=a, seed_labels=labels,
                                    with_pcs=mode == "direct", seed=10 * i + len(mode),
                                    pool_digest="bbbb" if name == "scratch_s2" else "aaaa")
    return root, facts


def _md_section(md: str, title: str) -> dict[str, dict[str, str]]:
    return _md_rows(md.split(f"## {title}", 1)[1].split("\n## ", 1)[0])


def test_pool_note_names_shared_different_and_unknown_pools():
    from alkit.compare import pool_note

    def runs(*digests):
        return [{"run": f"r{i}", "pool_digest": d} for i, d in enumerate(digests)]

    assert pool_note(runs("ab12", "ab12")) == "Pool: all runs share pool ab12."
    assert pool_note(runs("ab12", None, "ab12")) == ("Pool: 2 runs share pool ab12. Pool unknown for r1 (a log "
                                                     "that predates the digest).")
    assert pool_note(runs(None, None)) == "Pool: no run records its pool digest (logs that predate it)."
    assert pool_note(runs("ab12", "cd34")) == "Pool: the runs chose from 2 different pools (ab12: r0; cd34: r1)."
    assert pool_note([]) == ""
    scratch = [{"run": "s0", "pool_used": False, "pool_digest": None}, {"run": "s1", "pool_used": False}]
    assert pool_note(runs("ab12", "ab12") + scratch) == ("Pool: the 2 runs with a pool share pool ab12. s0, s1 drew "
                                                          "on no pool (AL from scratch).")
    assert pool_note(runs("ab12") + scratch[:1]) == ("Pool: r0, the run with a pool, uses pool ab12. s0 drew on no "
                                                     "pool (AL from scratch).")
    assert pool_note(scratch) == "Pool: no run drew on a pool."


def test_censored_median_bounds_the_median_of_runs_that_never_converged():
    from alkit.compare import censored_median

    assert censored_median([]) is None
    assert censored_median([(3, False), (5, False), (7, False)]) == {"median": 5.0, "exact": True, "n_bounds": 0}
    # a bound above the middle cannot move it; a bound at or below it can, so it is only a lower bound
    assert censored_median([(3, False), (5, False), (9, True)])["exact"]
    assert censored_median([(3, False), (4, True), (7, False)]) == {"median": 4.0, "exact": False, "n_bounds": 1}
    assert not censored_median([(3, False), (2, True), (7, False)])["exact"]  # true value could be 3..7 or more
    assert censored_median([(3, False), (2, True), (7, False)])["median"] == 3.0
    # even count: the mean of the two middle values
    assert censored_median([(2, False), (4, False), (6, False), (20, True)]) == {"median": 5.0, "exact": True,
                                                                                  "n_bounds": 1}


def test_compare_several_runs_per_mode(seeds, browser, tmp_path, capsys):
    from alkit.compare import mode_stats, stability_bands
    from alkit.report import load_run

    root, facts = seeds
    names = sorted(facts)
    out = tmp_path / "cmp"
    assert main(["compare", *[str(root / n) for n in names], "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert markdown_in(capsys.readouterr().out, md)

    modes = _md_section(md, "Per mode")
    d, s = modes["direct"], modes["scratch"]
    direct_labels = sorted(facts[n]["labels_to_all_stable"] for n in names if n.startswith("direct"))
    scratch_labels = sorted(facts[n]["labels_to_all_stable"] for n in ("scratch_s0", "scratch_s1"))
    assert d["runs"] == "3" and d["converged"] == "3/3 converged" and d["not converged"] == "-"
    assert d["labels to all-stable: median"] == f"{np.median(direct_labels):g}" == "54"
    assert d["labels: range"] == f"{direct_labels[0]}–{direct_labels[-1]}" == "42–54"
    assert d["AL iterations to all-stable: median"] == "2" and d["AL iterations: range"] == "1–2"
    walls = sorted(summarize_run(root / n)["al_wall_seconds"] for n in names if n.startswith("direct"))
    assert d["AL wall time: median (range)"].startswith(format_seconds(float(np.median(walls))))
    # the run that never converged is counted and named, and not in the medians (over the 2 converged runs)
    assert s["runs"] == "3" and s["converged"] == "2/3 converged" and s["not converged"] == "scratch_s2"
    assert s["labels to all-stable: median"] == f"{np.median(scratch_labels):g}"
    assert s["AL iterations to all-stable: median"] == "3.5" and s["AL iterations: range"] == "3–4"
    per_run = _md_section(md, "Per run")
    assert per_run["scratch_s2"]["status"] == "not converged"
    assert per_run["scratch_s2"]["all-stable at iteration"] == "not reached"
    assert "0.89x the median labels and 1.75x the median AL iterations of direct" in md
    # "all runs": scratch_s2 enters at its lower bounds (labels so far, iterations run); its bound is the largest
    # value, so the labels median is exact, while the iterations median (3, 4, >= 5) is the converged 4
    s2 = summarize_run(root / "scratch_s2")
    all_labels = sorted(scratch_labels + [s2["labels"]])
    assert s2["labels"] >= all_labels[1] and s2["iterations"] == 5
    assert s["labels: median, all runs"] == f"{all_labels[1]:g}" and s["AL iterations: median, all runs"] == "4"
    assert d["labels: median, all runs"] == "54" and d["AL iterations: median, all runs"] == "2"
    assert ("Over all runs, a non-converged run counted at its lower bound: direct needed 100% of scratch's median "
            "labels (0% fewer) and 50% of scratch's median AL iterations (50% fewer).") in md
    # one run chose from another pool: the comparison says so
    assert ("Pool: the runs chose from 2 different pools (aaaa: direct_s0, direct_s1, direct_s2, scratch_s0, "
            "scratch_s1; bbbb: scratch_s2).") in md

    data = json.loads((out / "compare.json").read_text())
    assert data["pool"].startswith("Pool: the runs chose from 2 different pools")
    assert [s_["pool_digest"] for s_ in data["runs"]] == ["aaaa"] * 5 + ["bbbb"]
    assert [m["mode"] for m in data["modes"]] == ["direct", "scratch"]
    assert data["modes"][1]["iterations_to_all_stable"]["values"] == [3, 4]

    # bands: median / min / max over the runs, converged runs counted as stable after they stopped
    runs = [load_run(root / n) for n in names]
    bands = stability_bands(runs, [summarize_run(r) for r in runs])
    sc = bands["scratch"][1000.0]
    it4 = sc["iterations"].index(4)
    # at iteration 4: s0 (stable since 3) = 1, s1 (stable at 4) = 1, s2 (never) = its own 2/3
    assert sc["n"][it4] == 3 and sc["median"][it4] == 1.0 and sc["min"][it4] == pytest.approx(2 / 3)
    dr = bands["direct"][300.0]
    assert dr["iterations"] == [0, 1, 2] and dr["max"][1] == 1.0 and dr["min"][1] < 1.0
    assert mode_stats([summarize_run(r) for r in runs])[0]["labels_to_all_stable"]["values"] == [42, 54, 54]

    plots = open_page(browser, out / "compare.html")
    assert [p["id"] for p in plots] == ["plot-compare_bands", "plot-compare_stability", "plot-compare_labels"]
    assert_all_rendered(plots)
    assert plots[0]["traces"] == 8  # 2 temperatures x 2 modes x (band + median)
    for png in ("compare_bands.png", "compare_stability.png", "compare_labels.png"):
        assert_png(out / png)
