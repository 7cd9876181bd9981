import numpy as np
import pandas as pd

from quarterpanic.onset import profile_step, selection_adjusted


def weekly_binomial(rng, p_before, p_after, onset, n_per_week=60, weeks=13, group="g"):
    rows = []
    for week in range(1, weeks + 1):
        p = p_after if week >= onset else p_before
        rows.append({"group": group, "week_of_quarter": week, "qualified": rng.binomial(n_per_week, p), "n": n_per_week})
    return pd.DataFrame(rows)


def test_binomial_step_finds_the_onset_of_a_clear_drop():
    rng = np.random.default_rng(1)
    frames = [weekly_binomial(rng, 0.7, 0.3, onset, group=f"g{onset}") for onset in (6, 9, 11)]
    prof = profile_step(pd.concat(frames), ["group"], events="qualified", base="n", direction=-1)
    assert dict(zip(prof["group"], prof["onset_week"])) == {"g6": 6, "g9": 9, "g11": 11}
    assert (prof["lr_stat"] > 50).all()
    assert (prof["events_after"] / prof["base_after"] < 0.4).all()


def test_direction_constraint_ignores_steps_the_wrong_way():
    rng = np.random.default_rng(2)
    rising = weekly_binomial(rng, 0.3, 0.8, 8)
    prof = profile_step(rising, ["group"], events="qualified", base="n", direction=-1)
    # Only downward steps are allowed and every split of this series goes up.
    assert prof["onset_week"].isna().all() and prof["n_candidates"].iloc[0] == 0
    prof_any = profile_step(rising, ["group"], events="qualified", base="n", direction=0)
    assert prof_any["onset_week"].iloc[0] == 8


def test_poisson_step_finds_a_surge():
    rng = np.random.default_rng(3)
    weeks = np.arange(1, 14)
    exposure = np.full(13, 5)
    counts = rng.poisson(np.where(weeks >= 10, 30, 10) * exposure / 5)
    weekly = pd.DataFrame({"org": "a", "week_of_quarter": weeks, "requests": counts, "days": exposure})
    prof = profile_step(weekly, ["org"], events="requests", base="days", kind="poisson", direction=+1)
    assert prof["onset_week"].iloc[0] == 10
    rate_ratio = (prof["events_after"] / prof["base_after"]) / (prof["events_before"] / prof["base_before"])
    assert 2.0 < rate_ratio.iloc[0] < 4.5


def test_min_each_side_leaves_thin_series_without_onset():
    weekly = pd.DataFrame({"g": "x", "week_of_quarter": [1, 2, 3], "k": [1, 1, 0], "n": [1, 1, 1]})
    prof = profile_step(weekly, ["g"], events="k", base="n", min_each_side=5)
    assert prof["onset_week"].isna().all()
    assert prof["n_candidates"].iloc[0] == 0


def test_calm_series_rarely_show_large_gains():
    rng = np.random.default_rng(4)
    frames = [weekly_binomial(rng, 0.7, 0.7, 99, group=str(i)) for i in range(200)]
    prof = profile_step(pd.concat(frames), ["group"], events="qualified", base="n", direction=-1)
    # The max over 8 candidates of a chi-square(1) exceeds 3.84*... rarely; a loose, failing-capable bound:
    assert (prof["lr_stat"] > 12).mean() < 0.02


def test_selection_adjustment_is_bonferroni_capped_at_one():
    assert np.allclose(selection_adjusted([0.001, 0.2], [8, 8]), [0.008, 1.0])
    assert selection_adjusted(0.01, 0) == 0.01
