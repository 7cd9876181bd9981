"""Open deals with no close date yet (many CRMs leave it empty until late) are open pipeline everywhere."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
from helpers import bernoulli_dataset

from quarterpanic.analysis import overview
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.features import opportunity_features


def with_open_deals_undated(dataset):
    opps = dataset.opportunities.copy()
    opps.loc[~opps["is_closed"].astype(bool), "close_date"] = pd.NaT
    return replace(dataset, opportunities=opps)


def test_detect_and_overview_treat_undated_open_deals_as_open():
    dated = bernoulli_dataset(seed=3, per_quarter=200)
    undated = with_open_deals_undated(dated)
    assert undated.opportunities["close_date"].isna().sum() > 0

    features = opportunity_features(undated)
    open_deals = features[features["close_date"].isna()]
    assert len(open_deals) and open_deals["close_quarter"].isna().all()

    # Qualification decay reads creation and outcomes, not the expected close date of open deals.
    cols = ["org", "quarter", "metric", "estimate", "status"]
    pd.testing.assert_frame_equal(detect(dated)[cols].query("metric == 'qualification_decay'"),
                                  detect(undated)[cols].query("metric == 'qualification_decay'"))
    # Bookings are closed-won deals only: the same with or without open deals' dates.
    pd.testing.assert_frame_equal(overview.bookings_by_week(dated.opportunities, dated.calendars),
                                  overview.bookings_by_week(undated.opportunities, undated.calendars))
