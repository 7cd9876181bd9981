"""The canonical tables of one organisation, drawn from its plan: opportunities, history, leads, requests."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from quarterpanic.ingest import schemas
from quarterpanic.sample.names import draw_people, record_ids
from quarterpanic.sample.plan import (
    DAY_HOURS,
    DAY_START,
    SEGMENTS,
    OrgPlan,
    draw_cycle_days,
    from_work_time,
    roll_to_weekday,
    work_time,
)

OPEN_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation")
WON, LOST = "Closed Won", "Closed Lost"
STAGE_NAMES = OPEN_STAGES + (WON, LOST)
STAGE_PROBABILITY = np.array([10, 20, 40, 60, 80, 100, 0], dtype=float)
STAGE_FORECAST = ("Pipeline", "Pipeline", "Best Case", "Best Case", "Commit", "Closed", "Omitted")
# Max open stage reached by lost deals, by qualification (index 0..4).
LOST_REACH = {True: [0.10, 0.20, 0.25, 0.25, 0.20], False: [0.30, 0.30, 0.20, 0.12, 0.08]}
DISCOUNT_CONCENTRATION = 25.0
LEAD_SOURCES = {"Web": 0.35, "Referral": 0.15, "Partner": 0.15, "Outbound": 0.25, "Event": 0.10}
LEAD_SHARE = 0.85            # share of opportunities converted from a lead
UNCONVERTED_LEADS = 1.2      # unconverted leads per opportunity
LEAD_SCORE = (62.0, 14.0)    # converted leads: mean, sd
DISQUALIFICATION_REASONS = ("No budget", "No authority", "Not a fit", "Competitor", "Unresponsive", "Duplicate")
UNPLANNED_TYPES = {  # weight, median turnaround hours
    "Discount Approval": (0.30, 6.0),
    "Rush Quote": (0.20, 4.0),
    "Contract Redline": (0.15, 30.0),
    "Expedite": (0.15, 8.0),
    "Pricing Exception": (0.12, 16.0),
    "Credit Check": (0.08, 20.0),
}
PLANNED_TYPES = {
    "Territory Planning": (0.15, 120.0),
    "Enablement": (0.25, 72.0),
    "Data Clean-up": (0.20, 48.0),
    "Forecast Review": (0.25, 24.0),
    "Process Improvement": (0.15, 160.0),
}
TURNAROUND_SIGMA = 0.8
PRIORITIES = ("Highest", "High", "Medium", "Low")
NEXT_STEPS = (
    "Send proposal", "Book demo with team", "Follow up on pricing", "Schedule technical review",
    "Get legal sign-off", "Intro call with decision maker", "Share case study", "Confirm budget",
    "Align on timeline", "Prepare SOW", "Negotiate terms", "Reference call",
)
PRODUCTS = ("New Business", "Renewal", "Expansion", "Services", "Pilot", "Platform Licence", "Add-on Seats")


def generate_org(plan: OrgPlan, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    people = draw_people(plan, rng)
    plan.set_sellers(people, rng)
    opps, changes = _opportunities(plan, people, rng)
    # Sorted by creation, so what exists at as_of is a prefix; changes after it never happened.
    n_visible = int(np.searchsorted(opps["w_created"], plan.w_as_of, side="right"))
    opps = {k: v[:n_visible] for k, v in opps.items()}
    seen = changes["when"] <= plan.w_as_of
    changes = {k: v[seen][np.argsort(changes["when"][seen], kind="stable")] for k, v in changes.items()}
    if plan.spec["format"] == "salesforce":
        # One multi-line Next Step with a euro sign, as real Salesforce exports have.
        with_step = np.flatnonzero(pd.notna(opps["next_step"]))
        if len(with_step):
            opps["next_step"][with_step[0]] = "Call CFO on Monday\nthen send revised quote (€ 12k discount)"
    ids = record_ids(plan, "opportunity", n_visible, rng)
    history, stage_now, max_open_stage = _history(plan, opps, changes, ids, rng)
    return {
        "opportunities": _opportunity_frame(plan, opps, changes, people, ids, stage_now, max_open_stage),
        "history": history,
        "leads": _leads(plan, opps, ids, people, rng),
        "requests": _requests(plan, opps, ids, people, rng),
    }


# -- opportunities --------------------------------------------------------------------------------
def _opportunities(plan: OrgPlan, people: dict, rng: np.random.Generator) -> dict:
    """Every opportunity created from the first day to the end of the open quarter (censored later)."""
    in_range = plan.day_q < plan.nq
    day_q = plan.day_q[in_range]
    busy = plan.day_busy[in_range]
    working = np.bincount(day_q, weights=busy, minlength=plan.nq)[day_q]
    rate = plan.creation_rate(plan.day_week[in_range], plan.day_weeks[in_range], busy, working,
                              plan.days[in_range], plan.day_quarter_num[in_range])
    counts = rng.poisson(rate)
    created_idx = np.repeat(np.arange(len(rate)), counts)
    n = len(created_idx)
    days = plan.days.to_numpy().astype("datetime64[D]")
    created_day = days[created_idx]
    w_created = work_time(created_day, rng.uniform(0.5, 9.5, n))
    q = plan.day_q[created_idx]
    late = plan.day_window[created_idx]

    owner = rng.choice(plan.n_sellers, n, p=people["weight"])
    team = people["team"][owner]
    segment_names = np.array(plan.team_segment, dtype=object)[team]
    seg_codes, seg_names = pd.factorize(segment_names)
    seg_params = [SEGMENTS[s] for s in seg_names]
    amount_median = np.array([p["amount_median"] for p in seg_params])[seg_codes]
    amount_sigma = np.array([p["amount_sigma"] for p in seg_params])[seg_codes]
    cycle_median = np.array([p["cycle_days"] for p in seg_params], dtype=float)[seg_codes]
    discount_mean = np.array([p["discount_mean"] for p in seg_params])[seg_codes]

    # Panic intensity (0..1) of each deal at creation: the panic's shape on that day, if it reached the owner.
    level = plan.intensity(created_idx, owner)
    visible = w_created <= plan.w_as_of
    plan.record_units("created", created_idx[late & visible], level[late & visible])
    for segment in dict.fromkeys(plan.team_segment):  # for per-segment truth (used where panic differs by segment)
        chosen = late & visible & (segment_names == segment)
        plan.record_units(f"created:{segment}", created_idx[chosen], level[chosen])

    # 1. Qualification at creation: p_owner, minus d (at the deal's intensity) when created late.
    decay = plan.blend("qualification_decay", q, level) - plan.calm["qualification_decay"]
    p_qualified = np.clip(people["qualification"][owner] - decay, 0.0, 1.0)
    qualified = rng.random(n) < p_qualified
    bant, next_step = _bant_and_next_step(qualified, rng)

    # 3. Win probability; late deals get the extra multiplier that makes the overall
    # ratio P(won | late) / P(won | early) equal win_rate_ratio given the qualification mix.
    pq, pu = float(plan.win_probability["qualified"]), float(plan.win_probability["unqualified"])
    q_early = float(np.sum(people["weight"] * people["qualification"]))
    p_early = q_early * pq + (1 - q_early) * pu
    multiplier = plan.blend("win_rate_ratio", q, level) * p_early / (p_early - decay * (pq - pu))
    p_won = np.where(qualified, pq, pu) * multiplier
    won = rng.random(n) < np.clip(p_won, 0.0, 1.0)

    amount0 = np.round(amount_median * np.exp(rng.normal(0.0, 1.0, n) * amount_sigma), -1)
    amount0 = np.maximum(amount0, 100.0)

    # Planned close date: created + lognormal cycle, on a weekday. Then, quarter by
    # quarter in time order, 6. the month-3 pull and 7. the quarter-end pushes move it.
    due = roll_to_weekday(created_day + draw_cycle_days(rng, cycle_median).astype("timedelta64[D]"))
    if plan.confounders["month_end_close_share"] > 0:
        # A natural hockey stick: some sellers enter the month's last working day as the close date
        # by habit. The month stays the same, so the calm month-3 share does too.
        habit = rng.random(n) < plan.confounders["month_end_close_share"]
        due[habit] = plan.day_dates[plan.day_month_end[plan.day_index(due[habit])]]
    planned_day = due.copy()
    changes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # opp, when, old, new
    for qi in range(plan.nq):
        if plan.panic[qi]:
            due = _pull_into_month3(plan, qi, won, created_day, owner, amount0, due, changes, rng)
        due = _push_past_quarter_end(plan, qi, created_day, owner, due, changes, rng)
    final_day = due
    final_idx = plan.day_index(final_day)
    w_close = work_time(final_day, rng.uniform(0.5, 9.5, n))
    close_level = plan.intensity(final_idx, owner)
    close_q = plan.day_q[final_idx]
    closed_visible = w_close <= plan.w_as_of
    if plan.close_keyed_wins:
        # Deals closing in a panic window's last week are lost more often: won x (1 + change) there.
        keep = np.where(plan.day_last_week[final_idx], plan.blend("last_week_win_rate_change", close_q, close_level),
                        1.0)
        won = won & (rng.random(n) < keep)
        _state_win_rate_ratio(plan, q, created_idx, late, visible, np.clip(p_won, 0.0, 1.0) * keep)

    # 5. Last-week deal size: amounts of deals closing in the last week of a panic quarter.
    in_last_week = plan.day_last_week[final_idx]
    plan.record_units("last_week_close", final_idx[in_last_week & closed_visible],
                      close_level[in_last_week & closed_visible])
    last_week = in_last_week & (close_level > 0)
    size_factor = plan.blend("last_week_deal_size_change", close_q, close_level)
    amount_final = np.round(amount0 * np.where(last_week, size_factor, 1.0), 2)

    # 4. Discount: segment base, + uplift for deals won with a close date in the panic window.
    kappa = DISCOUNT_CONCENTRATION
    discount = rng.beta(discount_mean * kappa, (1 - discount_mean) * kappa)
    won_late = won & plan.day_window[final_idx]
    plan.record_units("won_close", final_idx[won_late & closed_visible], close_level[won_late & closed_visible])
    uplift = plan.blend("discount_uplift", close_q, close_level) - plan.calm["discount_uplift"]
    discount = discount + np.where(won_late, uplift, 0.0)
    discount = np.round(np.clip(discount, 0.0, 0.6), 3)

    # Stage path: lost deals stop at a reached stage; skips drop an intermediate stage.
    reach = np.where(
        qualified,
        _choice_rows(rng, LOST_REACH[True], n),
        _choice_rows(rng, LOST_REACH[False], n),
    )
    reach = np.where(won, 4, reach)
    skip_rate = plan.blend("stage_skip_rate", q, level)
    skips = rng.random(n) < skip_rate
    reach = np.where(skips & ~won, np.maximum(reach, 2), reach)
    visited = np.arange(5)[None, :] <= reach[:, None]
    options = np.where(won, 4, reach - 1)  # droppable stages 1..options
    drop1 = 1 + np.floor(rng.random(n) * np.maximum(options, 1)).astype(int)
    drop2 = 1 + np.floor(rng.random(n) * np.maximum(options, 1)).astype(int)
    second = skips & (options >= 2) & (rng.random(n) < 0.25)
    rows = np.arange(n)
    visited[rows[skips], drop1[skips]] = False
    visited[rows[second], drop2[second]] = False

    # 8. Lead scores at conversion (drop for late conversions); conversion = creation.
    has_lead = rng.random(n) < LEAD_SHARE
    score = rng.normal(*LEAD_SCORE, n) - (plan.blend("lead_score_drop", q, level) - plan.calm["lead_score_drop"])
    score = np.where(has_lead, np.round(np.clip(score, 0.0, 100.0)), np.nan)
    lead_source = rng.choice(list(LEAD_SOURCES), n, p=list(LEAD_SOURCES.values()))

    # Amount revisions along the way (calm noise): an initial estimate replaced mid-cycle.
    revised = rng.random(n) < 0.25
    amount_initial = np.where(revised, np.round(amount0 * np.exp(rng.normal(0, 0.2, n)), -1), amount0)
    w_revised = w_created + rng.uniform(0.05, 0.5, n) * (w_close - w_created)

    kept = _sell_or_do(plan, w_created, w_close, won, amount_final, rng)
    order = np.argsort(w_created, kind="stable")
    order = order[kept[order]]
    rank = np.full(n, -1)
    rank[order] = np.arange(len(order))
    change_opp = np.concatenate([c[0] for c in changes]) if changes else np.zeros(0, int)
    still = kept[change_opp]
    close_changes = {
        "opp": rank[change_opp][still],
        "when": (np.concatenate([c[1] for c in changes]) if changes else np.zeros(0))[still],
        "old": (np.concatenate([c[2] for c in changes]) if changes else np.zeros(0, "datetime64[D]"))[still],
        "new": (np.concatenate([c[3] for c in changes]) if changes else np.zeros(0, "datetime64[D]"))[still],
    }
    arrays = dict(
        w_created=w_created, created_day=created_day, owner=owner, team=team, segment=segment_names,
        qualified=qualified, bant=bant, next_step=next_step, won=won, planned_day=planned_day,
        final_day=final_day, w_close=w_close, amount0=amount0, amount_final=amount_final, last_week=last_week,
        amount_initial=amount_initial, revised=revised, w_revised=w_revised, discount=discount,
        visited=visited, has_lead=has_lead, score=score, lead_source=lead_source,
        account=rng.choice(len(people["accounts"]), n, p=people["account_weight"]),
        product=rng.integers(0, len(PRODUCTS), n),
    )
    return {k: v[order] for k, v in arrays.items()}, close_changes


def _sell_or_do(plan: OrgPlan, w_created: np.ndarray, w_close: np.ndarray, won: np.ndarray, amount: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Which deals are created at all when a small firm stops selling while it delivers.

    ``sell_or_do: {min_amount, weeks, factor}``: after a won deal of at least ``min_amount`` closes,
    deals created in the next ``weeks`` weeks (of working time) exist only with probability
    ``factor``, so creation in post-win weeks is ``factor`` x what it would be (overlapping windows
    do not compound). Wins are taken in close order, and a deal that is never created opens no window.
    """
    spec = plan.spec.get("sell_or_do")
    kept = np.ones(len(w_created), dtype=bool)
    if not spec:
        return kept
    factor, span = float(spec["factor"]), float(spec["weeks"]) * 5 * DAY_HOURS
    survives = rng.random(len(w_created)) < factor
    big = np.flatnonzero(won & (amount >= float(spec["min_amount"])))
    opened = []
    for i in big[np.argsort(w_close[big], kind="stable")]:
        if kept[i]:
            kept &= ~((w_created > w_close[i]) & (w_created <= w_close[i] + span) & ~survives)
            opened.append(w_close[i])
    plan.sell_or_do_wins = int(np.sum(np.array(opened) <= plan.w_as_of))
    return kept


def _state_win_rate_ratio(plan: OrgPlan, q: np.ndarray, created_idx: np.ndarray, late: np.ndarray,
                         visible: np.ndarray, p_final: np.ndarray) -> None:
    """With a close-keyed win drop the creation-keyed ratio is no longer the scenario's: state it as the
    ratio of the expected win rates of the quarter's deals created after the onset and before it."""
    in_quarter = visible & (q < plan.nq)
    for qi in np.flatnonzero(plan.panic[: plan.nq]):
        chosen = in_quarter & (q == qi)
        if (chosen & late).any() and (chosen & ~late).any():
            plan.stated[("win_rate_ratio", int(qi))] = float(p_final[chosen & late].mean()
                                                             / p_final[chosen & ~late].mean())


def _choice_rows(rng: np.random.Generator, probabilities: list[float], n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(probabilities), rng.random(n) * sum(probabilities), side="right").clip(
        0, len(probabilities) - 1
    )


def _bant_and_next_step(qualified: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """BANT flags (n x 4) and next-step texts such that the default rule
    (>= 3 of 4 flags AND a non-empty next step) holds exactly for the qualified."""
    n = len(qualified)
    k_qualified = np.where(rng.random(n) < 0.5, 3, 4)
    # Unqualified: mostly too few flags; some have the flags but no next step.
    flags_but_no_step = rng.random(n) < 0.3
    k_unqualified = np.where(flags_but_no_step, np.where(rng.random(n) < 0.7, 3, 4), rng.integers(0, 3, n))
    k = np.where(qualified, k_qualified, k_unqualified)
    ranks = np.argsort(np.argsort(rng.random((n, 4)), axis=1), axis=1)
    bant = ranks < k[:, None]
    has_step = np.where(qualified, True, np.where(flags_but_no_step, False, rng.random(n) < 0.6))
    steps = np.array(NEXT_STEPS, dtype=object)[rng.integers(0, len(NEXT_STEPS), n)]
    next_step = np.where(has_step, steps, None)
    return bant, next_step


def _eligible_for_push(plan: OrgPlan, qi: int, idx: np.ndarray, created_day: np.ndarray) -> np.ndarray:
    """Deals due on day ``idx`` in the last 14 days of quarter ``qi`` and created before they began."""
    window_start = plan.quarter_end[qi] - np.timedelta64(13, "D")
    return (plan.day_q[idx] == qi) & (plan.day_to_end[idx] <= 13) & (created_day < window_start)


def _survival(plan: OrgPlan, qi: int, idx: np.ndarray, created_day: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """P(a deal due on day ``idx`` of quarter ``qi`` is not pushed out of it): its owner's push rate then."""
    rate = plan.blend("close_date_push_rate", np.full(len(idx), qi), plan.intensity(idx, owner))
    return 1.0 - _eligible_for_push(plan, qi, idx, created_day) * rate


def _pull_into_month3(plan: OrgPlan, qi: int, won: np.ndarray, created_day: np.ndarray, owner: np.ndarray,
                      amount0: np.ndarray, due: np.ndarray, changes: list, rng: np.random.Generator) -> np.ndarray:
    """Won deals due in months 1-2 of panic quarter ``qi`` slip into its month 3.

    Each candidate moves (to a uniform working day of month 3, the change made on its
    old due date) with probability
    pi = (s (A12 + B) - B) / ((1 - s) sum(post) + s sum(pre)),
    A12 = sum(pre) the candidates' won amount, B the won amount already due in month 3,
    post their amount once moved; amounts carry the last-week size change and are
    weighted by the chance of not being pushed out in the last two weeks. So the
    expected month-3 share of the quarter's won amount is s = month3_bookings_share.
    """
    target = plan.month3_target(qi)
    idx = plan.day_index(due)
    in_q = won & (plan.day_q[idx] == qi)
    month = plan.day_month[idx]

    def size(days: np.ndarray, sellers: np.ndarray) -> np.ndarray:
        """Expected won amount per unit of amount0 on those days: the size change, and the win drop."""
        level = plan.intensity(days, sellers)
        factor = plan.blend("last_week_deal_size_change", np.full(len(days), qi), level)
        if plan.close_keyed_wins:
            factor = factor * plan.blend("last_week_win_rate_change", np.full(len(days), qi), level)
        return np.where(plan.day_last_week[days], factor, 1.0)

    expected = amount0 * size(idx, owner) * _survival(plan, qi, idx, created_day, owner)
    candidates = np.flatnonzero(in_q & (month < 3))
    month3_days = np.flatnonzero((plan.day_q == qi) & (plan.day_month == 3) & plan.day_busy)
    if len(candidates) == 0 or len(month3_days) == 0:
        return due
    new_idx = month3_days[rng.integers(0, len(month3_days), len(candidates))]
    moved = (amount0[candidates] * size(new_idx, owner[candidates])
             * _survival(plan, qi, new_idx, created_day[candidates], owner[candidates]))
    month3_amount = float(np.sum(expected[in_q & (month == 3)]))
    pre, post = float(np.sum(expected[candidates])), float(np.sum(moved))
    pi = (target * (pre + month3_amount) - month3_amount) / ((1 - target) * post + target * pre)
    if plan.close_keyed_wins:
        # Sellers pull forecast deals, not outcomes: lost deals move with the same probability, so
        # win rates by close week carry only the injected drop.
        candidates = np.flatnonzero((plan.day_q[idx] == qi) & (month < 3))
        new_idx = month3_days[rng.integers(0, len(month3_days), len(candidates))]
    move = rng.random(len(candidates)) < min(max(pi, 0.0), 1.0)
    rows, new_days = candidates[move], plan.day_dates[new_idx[move]]
    changes.append((rows, work_time(due[rows], rng.uniform(0.5, 9.5, len(rows))), due[rows], new_days))
    due = due.copy()
    due[rows] = new_days
    return due


def _push_past_quarter_end(plan: OrgPlan, qi: int, created_day: np.ndarray, owner: np.ndarray, due: np.ndarray,
                           changes: list, rng: np.random.Generator) -> np.ndarray:
    """Push deals due in the last two weeks of quarter ``qi`` (and open when they began)
    into the first six weeks of the next quarter, each with probability close_date_push_rate.
    The change is made at a uniform working moment between the window start and the due date."""
    idx = plan.day_index(due)
    rate = 1.0 - _survival(plan, qi, idx, created_day, owner)
    if plan.panic[qi]:
        eligible = _eligible_for_push(plan, qi, idx, created_day) & (created_day <= plan.as_of.to_datetime64())
        plan.record_units("push", idx[eligible], plan.intensity(idx[eligible], owner[eligible]))
    rows = np.flatnonzero(rng.random(len(due)) < rate)
    if len(rows) == 0:
        return due
    window_start = plan.quarter_end[qi] - np.timedelta64(13, "D")
    new_days = roll_to_weekday(plan.quarter_end[qi] + rng.integers(1, 43, len(rows)).astype("timedelta64[D]"))
    w_start = work_time(np.array([window_start]))[0]
    w_due_end = work_time(due[rows], DAY_HOURS)
    when = w_start + rng.random(len(rows)) * (w_due_end - w_start)
    changes.append((rows, when, due[rows], new_days))
    due = due.copy()
    due[rows] = new_days
    return due


def _opportunity_frame(plan: OrgPlan, o: dict, changes: dict, people: dict, ids: np.ndarray,
                       stage_now: np.ndarray, max_open_stage: np.ndarray) -> pd.DataFrame:
    """The canonical opportunities of one org as they stand at ``as_of``."""
    w_as_of = plan.w_as_of
    closed = o["w_close"] <= w_as_of
    current_close = o["planned_day"].copy()
    current_close[changes["opp"]] = changes["new"]  # in time order: the last change wins
    amount_now = np.where(o["revised"] & (o["w_revised"] > w_as_of), o["amount_initial"], o["amount0"])
    is_won = closed & o["won"]
    accounts = people["accounts"][o["account"]]
    dash = " – " if plan.spec["format"] == "salesforce" else " - "
    return pd.DataFrame(
        {
            "org": plan.name,
            "opportunity_id": ids,
            "name": accounts + dash + np.array(PRODUCTS, dtype=object)[o["product"]],
            "account": accounts,
            "owner": people["names"][o["owner"]],
            "team": np.array(plan.team_names, dtype=object)[o["team"]],
            "segment": o["segment"],
            "size_class": plan.spec["size_class"],
            "created_at": from_work_time(o["w_created"]),
            "close_date": np.where(closed, o["final_day"], current_close).astype("datetime64[ns]"),
            "stage": np.array(STAGE_NAMES, dtype=object)[stage_now],
            "is_closed": closed,
            "is_won": is_won,
            "amount": np.where(closed, o["amount_final"], amount_now),
            "currency": plan.spec.get("currency", "USD"),
            # Quoted discounts exist once a deal reached Proposal.
            "discount": np.where(is_won | (max_open_stage >= 3), o["discount"], np.nan),
            "probability": STAGE_PROBABILITY[stage_now],
            "forecast_category": np.array(STAGE_FORECAST, dtype=object)[stage_now],
            "lead_source": o["lead_source"],
            "lead_score": o["score"],
            "bant_budget": o["bant"][:, 0],
            "bant_authority": o["bant"][:, 1],
            "bant_need": o["bant"][:, 2],
            "bant_timeline": o["bant"][:, 3],
            "next_step": o["next_step"],
        }
    )


# -- history --------------------------------------------------------------------------------------
_FIELDS = np.array(schemas.HISTORY_FIELDS, dtype=object)  # stage, amount, close_date, forecast_category


def _history(plan: OrgPlan, o: dict, changes: dict, ids: np.ndarray, rng: np.random.Generator):
    """Field history rows up to ``as_of``, plus each deal's stage and highest open stage then.

    Stage rows: each visited stage after Prospecting (where every deal starts) at
    sorted uniform times between creation and close, then the close. Forecast category rows where the stage
    moves the category. Amount rows for revisions and the last-week size change;
    close_date rows for pushes and month-3 pulls.
    """
    n = len(o["w_created"])
    w_as_of = plan.w_as_of
    span = o["w_close"] - o["w_created"]
    # Stage events: creation (code 0), transitions into visited stages 1..4, close (5 won, 6 lost).
    t_rows, t_stage = np.nonzero(o["visited"][:, 1:])
    t_stage = t_stage + 1
    u = rng.uniform(0.03, 0.97, len(t_rows))
    u_sorted = u[np.lexsort((u, t_rows))]  # same group sizes, so block positions line up
    stage_opp = np.concatenate([np.arange(n), t_rows, np.arange(n)])
    stage_time = np.concatenate([o["w_created"], o["w_created"][t_rows] + u_sorted * span[t_rows], o["w_close"]])
    stage_code = np.concatenate([np.zeros(n, int), t_stage, np.where(o["won"], 5, 6)])
    order = np.lexsort((stage_time, stage_opp))
    stage_opp, stage_time, stage_code = stage_opp[order], stage_time[order], stage_code[order]
    starts = np.searchsorted(stage_opp, np.arange(n))
    first = np.zeros(len(stage_opp), dtype=bool)
    first[starts] = True
    stage_old = np.where(first, -1, np.roll(stage_code, 1))

    seen = stage_time <= w_as_of
    count = np.bincount(stage_opp[seen], minlength=n)
    now_pos = starts + count - 1
    stage_now = stage_code[now_pos]
    max_open_stage = np.where(stage_now >= 5, stage_old[now_pos], stage_now)

    names = np.array(STAGE_NAMES, dtype=object)
    forecast = np.array(STAGE_FORECAST + ("",), dtype=object)
    fc_change = ~first & (forecast[stage_old] != forecast[stage_code])

    def money(x: np.ndarray) -> np.ndarray:  # as loading normalises amounts: str(float)
        return np.asarray(x, dtype=float).astype(str).astype(object)

    def day(x: np.ndarray) -> np.ndarray:
        return np.datetime_as_string(x.astype("datetime64[D]")).astype(object)

    revised, last_week = o["revised"], o["last_week"]
    moved = ~first  # creation is not a change: the first stage row leaves Prospecting
    parts = [
        (stage_opp[moved], stage_time[moved], 0, names[stage_old[moved]], names[stage_code[moved]]),
        (stage_opp[fc_change], stage_time[fc_change], 3, forecast[stage_old[fc_change]], forecast[stage_code[fc_change]]),
        (np.flatnonzero(revised), o["w_revised"][revised], 1, money(o["amount_initial"][revised]),
         money(o["amount0"][revised])),
        (np.flatnonzero(last_week), o["w_close"][last_week], 1, money(o["amount0"][last_week]),
         money(o["amount_final"][last_week])),
        (changes["opp"], changes["when"], 2, day(changes["old"]), day(changes["new"])),
    ]
    opp = np.concatenate([p[0] for p in parts])
    when = np.concatenate([p[1] for p in parts])
    field_code = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    old = np.concatenate([np.asarray(p[3], dtype=object) for p in parts])
    new = np.concatenate([np.asarray(p[4], dtype=object) for p in parts])
    keep = when <= w_as_of
    order = np.argsort(when[keep], kind="stable")
    opp, when, field_code, old, new = (a[keep][order] for a in (opp, when, field_code, old, new))
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "opportunity_id": ids[opp],
            "changed_at": from_work_time(when),
            "field": _FIELDS[field_code],
            "old_value": old,
            "new_value": new,
        }
    )
    return frame, stage_now, max_open_stage


# -- leads ----------------------------------------------------------------------------------------
def _leads(plan: OrgPlan, o: dict, opp_ids: np.ndarray, people: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Converted leads (one per opportunity that came from a lead) and unconverted ones."""
    w_first = work_time(np.array([plan.data_start], dtype="datetime64[D]"))[0] + 0.5
    conv = np.flatnonzero(o["has_lead"])
    # Working hours from lead creation to conversion; leads of the first days are younger.
    lead_age = 60.0 * np.exp(rng.normal(0.0, 1.0, len(conv)))
    room = np.maximum(o["w_created"][conv] - w_first, 0.0)
    lead_age = np.where(lead_age > room, rng.random(len(conv)) * room, lead_age)
    w_conv_created = o["w_created"][conv] - lead_age
    n_other = rng.poisson(UNCONVERTED_LEADS * len(o["w_created"]))
    w_other = rng.uniform(w_first, plan.w_as_of, n_other)
    recent = w_other > plan.w_as_of - 30 * DAY_HOURS
    status_other = np.where(
        recent,
        np.where(rng.random(n_other) < 0.5, "Open", "Working"),
        np.where(rng.random(n_other) < 0.7, "Disqualified", "Nurture"),
    ).astype(object)
    reasons = np.array(DISQUALIFICATION_REASONS, dtype=object)[rng.integers(0, len(DISQUALIFICATION_REASONS), n_other)]
    score_other = np.round(np.clip(rng.normal(40.0, 15.0, n_other), 0.0, 100.0))
    converted_at = from_work_time(o["w_created"][conv])

    w = np.concatenate([w_conv_created, w_other])
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "w": w,
            "status": np.concatenate([np.full(len(conv), "Converted", dtype=object), status_other]),
            "lead_source": np.concatenate(
                [o["lead_source"][conv], rng.choice(list(LEAD_SOURCES), n_other, p=list(LEAD_SOURCES.values()))]
            ),
            "score": np.concatenate([o["score"][conv], score_other]),
            "owner": people["names"][
                np.concatenate([o["owner"][conv], rng.choice(plan.n_sellers, n_other, p=people["weight"])])
            ],
            "converted_at": np.concatenate([converted_at, np.full(n_other, np.datetime64("NaT"), "datetime64[ns]")]),
            "converted_opportunity_id": np.concatenate([opp_ids[conv], np.full(n_other, None, dtype=object)]),
            "disqualification_reason": np.concatenate(
                [np.full(len(conv), None, dtype=object), np.where(status_other == "Disqualified", reasons, None)]
            ),
        }
    )
    frame = frame.iloc[np.argsort(w, kind="stable")].reset_index(drop=True)
    frame.insert(1, "lead_id", record_ids(plan, "lead", len(frame), rng))
    frame.insert(2, "created_at", from_work_time(frame.pop("w").to_numpy()))
    return frame


# -- requests -------------------------------------------------------------------------------------
def _requests(plan: OrgPlan, o: dict, opp_ids: np.ndarray, people: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Sales-ops requests: Poisson per working day, unplanned x r and planned x deferral in panic windows."""
    in_range = (plan.day_q < plan.nq) & plan.day_busy
    in_range &= plan.days.to_numpy() <= plan.as_of.to_datetime64()
    in_range &= plan.days.to_numpy() >= plan.data_start.to_datetime64()
    day_idx = np.flatnonzero(in_range)
    spec = plan.spec
    # Org-level rates: each day's multiplier is the mean over sellers (by propensity) at their intensity.
    unplanned_rate = float(spec["unplanned_requests_per_day"]) * plan.volume * plan.day_mixture(
        day_idx, "reactive_order_taking")
    planned_rate = float(spec["planned_requests_per_day"]) * plan.volume * plan.day_mixture(
        day_idx, "planned_work_deferral")
    if plan.confounders["q4_volume"] != 1.0:  # the seasonal bump lifts the whole fourth quarter alike
        bump = np.where(plan.day_quarter_num[day_idx] == 4, plan.confounders["q4_volume"], 1.0)
        unplanned_rate, planned_rate = unplanned_rate * bump, planned_rate * bump
    n_unplanned = rng.poisson(unplanned_rate)
    n_planned = rng.poisson(planned_rate)
    req_day = np.concatenate([np.repeat(day_idx, n_unplanned), np.repeat(day_idx, n_planned)])
    planned = np.concatenate([np.zeros(n_unplanned.sum(), bool), np.ones(n_planned.sum(), bool)])
    n = len(req_day)
    in_window = plan.day_window[req_day]

    # Creation time: working hours, or after hours with the (panic-raised) share.
    position = np.searchsorted(day_idx, req_day)
    after_share = plan.day_mixture(day_idx, "after_hours_share")[position]
    after = rng.random(n) < after_share
    evening = rng.random(n) < 0.75
    hour = np.where(after, np.where(evening, rng.uniform(18.0, 22.5, n), rng.uniform(6.5, 8.0, n)),
                    rng.uniform(8.0, 18.0, n))
    days = plan.days.to_numpy().astype("datetime64[D]")[req_day]
    created = days.astype("datetime64[m]") + np.round(hour * 60).astype("timedelta64[m]")

    unplanned_names = list(UNPLANNED_TYPES)
    planned_names = list(PLANNED_TYPES)
    u_type = rng.choice(len(unplanned_names), n, p=[w for w, _ in UNPLANNED_TYPES.values()])
    p_type = rng.choice(len(planned_names), n, p=[w for w, _ in PLANNED_TYPES.values()])
    type_name = np.where(planned, np.array(planned_names, dtype=object)[p_type],
                         np.array(unplanned_names, dtype=object)[u_type])
    median = np.where(planned, np.array([m for _, m in PLANNED_TYPES.values()])[p_type],
                      np.array([m for _, m in UNPLANNED_TYPES.values()])[u_type])
    stretch = plan.day_mixture(day_idx, "turnaround_stretch")[position]
    turnaround_h = median * np.exp(rng.normal(0.0, TURNAROUND_SIGMA, n)) * stretch
    resolved = created + np.round(turnaround_h * 60).astype("timedelta64[m]")
    as_of = plan.as_of.to_datetime64().astype("datetime64[m]")
    done = resolved <= as_of

    # Unplanned requests are about a deal open at the time: a few random draws among
    # deals created in the last 120 working days, else the latest deal created before.
    w_req = work_time(days, np.clip(hour - DAY_START, 0.0, DAY_HOURS))
    opp = np.full(n, -1)
    todo = ~planned
    hi_all = np.searchsorted(o["w_created"], w_req, side="right")
    lo_all = np.searchsorted(o["w_created"], w_req - 120 * DAY_HOURS)
    for _ in range(6):
        rows = np.flatnonzero(todo)
        hi, lo = hi_all[rows], lo_all[rows]
        pick = lo + np.floor(rng.random(len(rows)) * (hi - lo)).astype(int)
        ok = (hi > lo) & (o["w_close"][np.minimum(pick, max(len(o["w_close"]) - 1, 0))] >= w_req[rows])
        opp[rows[ok]] = pick[ok]
        todo[rows[ok]] = False
    opp = np.where(todo & (hi_all > 0), hi_all - 1, opp)
    linked = opp >= 0
    requester = np.where(linked, o["owner"][np.maximum(opp, 0)] if len(o["owner"]) else 0,
                         rng.choice(plan.n_sellers, n, p=people["weight"]))
    priority_p = np.where(
        planned[:, None], [[0.0, 0.1, 0.6, 0.3]],
        np.where(in_window[:, None], [[0.3, 0.35, 0.3, 0.05]], [[0.1, 0.3, 0.45, 0.15]]),
    )
    priority = (rng.random(n)[:, None] > np.cumsum(priority_p, axis=1)).sum(axis=1).clip(0, 3)
    open_status = np.array(["To Do", "In Progress", "Waiting for Approval"], dtype=object)[rng.integers(0, 3, n)]
    hours = np.where(planned, 5.0, 1.5) * np.exp(rng.normal(0.0, 0.7, n))
    hours = np.where(rng.random(n) < 0.6, np.maximum(np.round(hours * 4) / 4, 0.25), np.nan)

    exists = created <= as_of  # evening requests of the as-of day come after it
    order = np.argsort(created, kind="stable")
    order = order[exists[order]]
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "created_at": created.astype("datetime64[ns]"),
            "resolved_at": np.where(done, resolved, np.datetime64("NaT")).astype("datetime64[ns]"),
            "request_type": type_name,
            "priority": np.array(PRIORITIES, dtype=object)[priority],
            "status": np.where(done, "Done", open_status).astype(object),
            "requester": people["names"][requester],
            "team": np.array(plan.team_names, dtype=object)[people["team"][requester]],
            "opportunity_id": np.where(linked, opp_ids[np.maximum(opp, 0)] if len(opp_ids) else None, None),
            "planned": planned,
            "handling_hours": hours,
        }
    ).iloc[order].reset_index(drop=True)
    frame.insert(1, "request_id", record_ids(plan, "request", len(frame), rng))
    return frame


def canonical(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Schema column order and dtypes, provenance ``<generated>`` with rows 2..n+1 (one org's table)."""
    frame = frame.copy()
    frame["source_file"] = "<generated>"
    frame["source_row"] = np.arange(2, len(frame) + 2)
    dtypes = _canonical_dtypes(table)
    return frame[list(dtypes)].astype(dtypes)


@functools.lru_cache(maxsize=None)
def _canonical_dtypes_cached(table: str) -> tuple:
    return tuple(schemas.empty(table).dtypes.items())


def _canonical_dtypes(table: str) -> dict:
    return dict(_canonical_dtypes_cached(table))
