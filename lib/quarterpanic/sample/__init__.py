"""The sample CRM generator: realistic pipelines with quarter-end panic of known size.

:func:`generate` builds, in memory and vectorised, the five canonical tables
(``quarterpanic.ingest.schemas``) of a few organisations over ten or so fiscal quarters
and an open one, with panic injected in the quarters a *scenario* names, and a
``truth`` dict saying exactly which effect of which size holds where.
:func:`write_sample` writes the same sample as vendor exports (Salesforce,
HubSpot, Jira, a mapped generic CSV) plus ``org.yaml``, ``truth.json`` and the
scenario, the way a user would drop exports into a data folder.

Effects (``truth["quarters"][i]["effects"]``, named as the detectors report them).
"Late" means at or after the quarter's ``onset_week`` (``week_of_quarter`` by the
org's :class:`~quarterpanic.calendar.FiscalCalendar`) in a panic quarter; calm
quarters carry the neutral value of the scenario's ``calm:`` block, panic quarters
the value of ``panic:`` (with org / quarter overrides):

* ``qualification_decay`` d: each deal is qualified at creation with probability
  p_owner (org ``qualification_rate`` +- 0.05 per seller), p_owner - d if created
  late: additive, the same in every segment and lead source. Qualified means the
  default rule holds exactly: >= 3 of the 4 BANT flags and a non-empty next step.
* ``reactive_order_taking`` r: unplanned requests (Discount Approval, Rush Quote,
  Contract Redline, Expedite, Pricing Exception, Credit Check) are Poisson per
  working day (Mon-Fri) at the org's rate, x r on every working day of late weeks;
  r = rate per working day late / rate per working day earlier in the quarter.
* ``planned_work_deferral``: the same ratio for planned requests.
* ``turnaround_stretch``: turnaround (resolved - created, calendar hours) is
  lognormal per request type, its scale x stretch for requests created late.
* ``after_hours_share``: share of requests created outside 08:00-18:00. truth.json
  also states ``after_hours_shift``, the late window's share minus the same quarter's
  earlier weeks' (what the detector's ``after_hours_shift`` estimates; 0 when calm).
* ``win_rate_ratio``: P(won | created late) / P(won | created earlier in the quarter),
  over deals created in the quarter (closing is independent of outcome). Base
  P(won) is by qualification (``win_probability``); late deals get the extra
  multiplier that makes the ratio exact given the qualification drop.
* ``discount_uplift``: + this many fraction points of discount on deals won with a
  late close date (base: Beta by segment, mean 0.08-0.12; clipped to [0, 0.6]).
* ``last_week_deal_size_change`` c: amounts of deals (won or lost) closing in the
  last week of a panic quarter x (1 + c), every segment alike.
* ``month3_bookings_share``: expected share of the quarter's won amount whose close
  date is in month 3 (``month_of_quarter == 3``). Panic quarters: won deals due in
  months 1-2 slip into month 3 with the probability that makes the expectation the
  parameter. Calm quarters: the expected value of the calm process (creation rate
  convolved with the cycle-length distributions; ramp-up of the first quarters
  included, calm pushes ignored).
* ``close_date_push_rate``: among deals open when the quarter's last 14 days begin
  (created before them) and due inside them, the share whose close date is moved
  past quarter end by a change made in those 14 days (into the next quarter's first
  six weeks). Applies to every quarter; panic quarters use the panic rate.
* ``lead_score_drop``: score at conversion of converted leads (= the opportunity's
  ``lead_score``; conversion = the opportunity's creation) is this many points lower
  for late conversions.
* ``stage_skip_rate``: share of late-created deals whose full stage path skips an
  open stage (a move over a stage, or into Closed Won from before Negotiation);
  every other deal skips at the calm rate.

* ``last_week_win_rate_change`` c: deals closing in the window's last week are won
  x (1 + c) (keyed to the close date; with it, month-3 pulls move lost deals too).

Panic quarters and onsets come from each org's ``panic_quarters`` in the scenario
(keys: quarters before the open one, 0 = open, or quarter labels; or ``draw:`` per seed).
The values above are those at full intensity: a panic's ``pattern`` (shape step / ramp /
plateau, ``seller_fraction``, ``spread``, ``segments``) scales them per day and seller, and
``truth.json`` states each as its average over the post-onset window (docs/METHODS.md,
"The sample generator and its truth"). Scenario values may be distributions drawn per seed.

The package sits beside the pipeline, split by job: scenarios (``scenario``, shipped in ``scenarios/``), each
org's plan and truth (``plan``), people and record ids (``names``), the canonical tables (``tables``), the vendor
exports (``vendor_writers``) and the whole sample (``generator``). It may import ``ingest`` (the profiles and
schemas its exports must satisfy), ``calendar``, ``params``, ``errors``, ``paths`` and ``util``; only ``cli``
imports it (tests and benchmarks use it from outside the package).
"""
from __future__ import annotations

from quarterpanic.sample.generator import Sample, generate, write_sample
from quarterpanic.sample.scenario import EFFECTS, SCALES, load_scenario

__all__ = ["EFFECTS", "SCALES", "Sample", "generate", "load_scenario", "write_sample"]
