"""Every shipped recipe (alkit/recipes/) builds valid configurations for every preset, and the recipe pattern generalises:
the aluminium recipe runs a complete (tiny) campaign."""
from __future__ import annotations

import dataclasses

import pytest

from alkit.driver import ActiveLearningDriver
from alkit.errors import ConfigError
from alkit.recipe import RECIPES_DIR, build_config, load_recipe

RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.py") if not p.stem.startswith("_"))


def test_there_are_two_recipes():
    assert {"ti_h", "al"} <= set(RECIPES)


_BUILT: dict = {}


def built(name: str, preset: str):
    """Build each (recipe, preset) once per test session: the paper presets hold hundreds of structures."""
    if (name, preset) not in _BUILT:
        _BUILT[name, preset] = build_config(name, preset, "direct")
    return _BUILT[name, preset]


@pytest.mark.parametrize("name", RECIPES)
def test_every_preset_builds_a_valid_config(name):
    mod = load_recipe(name)
    for preset in mod.PRESETS:
        cfg = built(name, preset)
        cfg.validate()
        assert cfg.scenarios
        scratch = dataclasses.replace(cfg, mode="scratch")
        scratch.validate()
        assert scratch.reselection == "maxvol" and not scratch.needs_sampler


def test_ti_h_paper_preset_is_the_papers_274_scenarios():
    cfg = built("ti_h", "paper")
    assert len(cfg.scenarios) == 274
    assert {s.temperature for s in cfg.scenarios} == {300.0, 1000.0, 3000.0}
    assert cfg.loss_weights == (1.0, 0.01, 0.0) and cfg.gamma_select == cfg.gamma_break == 3.0


def test_unknown_recipe_and_preset():
    with pytest.raises(ConfigError, match="not found"):
        build_config("no_such_recipe")
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("ti_h", "huge")


def test_broken_recipe_names_itself(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("PRESETS = {}\n")
    with pytest.raises(ConfigError, match="must define PRESETS"):
        load_recipe(bad)


@pytest.mark.slow
def test_aluminium_tiny_campaign_from_scratch(tmp_path):
    summary = ActiveLearningDriver(build_config("al", "tiny", "scratch"), tmp_path / "al").run()
    assert summary["finished"]
    assert summary["labelled"] >= 2
    assert summary["iterations_done"] >= 1


def test_run_command_line_overrides_only_what_it_is_given():
    """`alkit run` keeps the recipe's values unless an option is given; --no-post-validation lets a repeated comparison
    run its campaigns back to back and validate them afterwards."""
    from alkit.cli import build_parser
    from alkit.commands.run import config_from_args

    parse = build_parser().parse_args
    base = config_from_args(parse(["run", "ti_h", "--preset", "workstation"]))
    assert base.post_validation is True and base.seed == build_config("ti_h", "workstation", "direct").seed
    cfg = config_from_args(parse(["run", "ti_h", "--preset", "workstation", "--mode", "scratch", "--seed", "2",
                                  "--no-post-validation", "--workers", "1"]))
    assert (cfg.post_validation, cfg.seed, cfg.mode, cfg.n_workers) == (False, 2, "scratch", 1)
    assert cfg.mtp_level == base.mtp_level and cfg.scenarios == base.scenarios
    assert config_from_args(parse(["run", "ti_h", "--preset", "tiny", "--post-validation"])).post_validation is True
