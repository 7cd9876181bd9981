"""Helpers shared by the test modules (importable because tests/conftest.py puts tests/ on sys.path)."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from statsmodels.genmod.families import Poisson
from statsmodels.genmod.generalized_linear_model import GLM

from quarterpanic import cli

from quarterpanic.analysis.features import opportunity_features, quarter_roles
from quarterpanic.analysis.findings import ALL_SEGMENTS, apply_fdr_of, with_direction
from quarterpanic.analysis.panic_index import index_from_findings
from quarterpanic.analysis.qualification import COMPONENT as DECAY
from quarterpanic.analysis.qualification import decay_candidates, decay_findings, decay_intensity, oracle_decay_p_value
from quarterpanic.analysis.reactive import COMPONENT as SURGE
from quarterpanic.analysis.reactive import analyse_reactive, estimate_surge
from quarterpanic.dataset import Dataset
from quarterpanic.ingest import schemas
from quarterpanic.params import defaults
from quarterpanic.run import executors, runner
from quarterpanic.sample import generate

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "exports"
HOSTILE_ORG = "Brightline <img src=x onerror=alert(1)> Studio"


def canonical_table(name: str, rows, source_file: str = "f.csv") -> pd.DataFrame:
    """A validated canonical table from a few hand-written rows; unnamed columns are empty."""
    frame = pd.DataFrame(rows).copy()
    base = schemas.empty(name)
    for column in base.columns:
        if column not in frame:
            frame[column] = None
    frame["source_file"] = source_file
    frame["source_row"] = range(2, len(frame) + 2)
    return schemas.TABLES[name].validate(frame[base.columns])


def request_row(created, *, org="A", type_="Rush Quote", planned=False, resolved=None, priority="Medium", opp=None,
                requester="ann", hours=None, rid=None):
    """One canonical requests row (a dict for :func:`canonical_table`); unnamed fields take plain defaults."""
    return dict(org=org, request_id=rid or f"R{created}", created_at=created, resolved_at=resolved,
                request_type=type_, planned=planned, priority=priority, opportunity_id=opp, requester=requester,
                handling_hours=hours)


def opportunity_row(oid, created, *, org="A", won=False, closed=True, close="2025-03-01", segment="SMB"):
    """One canonical opportunities row: won, lost (closed, not won) or still open."""
    return dict(org=org, opportunity_id=oid, size_class="mid", created_at=created, close_date=close,
                stage="Closed Won" if won else ("Closed Lost" if closed else "Proposal"), is_closed=closed,
                is_won=won, segment=segment)


def bernoulli_dataset(seed=0, *, per_quarter=500, p0=0.7, drop=0.3, onset=9, panic=(1,), quarters=4, owners=12,
                      as_of=None, org="A"):
    """Calendar-year quarters; in panic quarters P(qualified) falls by ``drop`` from week ``onset`` on."""
    rng = np.random.default_rng(seed)
    frames = []
    for q in range(quarters):
        start = pd.Timestamp("2024-01-01") + pd.DateOffset(months=3 * q)
        days = (start + pd.DateOffset(months=3) - start).days
        created = start + pd.to_timedelta(rng.uniform(0, days, per_quarter), unit="D")
        week = np.minimum((np.asarray((created - start).days) // 7) + 1, 13)
        owner = rng.integers(0, owners, per_quarter)
        p = p0 + np.linspace(-0.05, 0.05, owners)[owner] - np.where((q in panic) & (week >= onset), drop, 0.0)
        qualified = rng.random(per_quarter) < p
        n_flags = np.where(qualified, 4, rng.integers(0, 3, per_quarter))
        closed = rng.random(per_quarter) < 0.8
        frames.append(pd.DataFrame({
            "org": org, "opportunity_id": [f"{org}{q}-{i}" for i in range(per_quarter)], "size_class": "mid",
            "created_at": created, "close_date": created + pd.Timedelta(days=20), "stage": "Closed Won",
            "is_closed": closed, "is_won": closed & (rng.random(per_quarter) < np.where(qualified, 0.4, 0.15)),
            "owner": [f"o{o}" for o in owner], "segment": rng.choice(["SMB", "Mid-Market"], per_quarter),
            "lead_source": rng.choice(["Web", "Referral", "Outbound"], per_quarter),
            "bant_budget": n_flags >= 1, "bant_authority": n_flags >= 2, "bant_need": n_flags >= 3,
            "bant_timeline": n_flags >= 4, "next_step": "Call", "amount": 1000.0, "discount": 0.1,
            "lead_score": 60.0,
        }))
    opps = canonical_table("opportunities", pd.concat(frames, ignore_index=True))
    end = pd.Timestamp("2024-01-01") + pd.DateOffset(months=3 * quarters)
    return Dataset.from_tables({"opportunities": opps}, {org: {"size_class": "mid"}}, as_of=as_of or end)


def execute_notebook_on_sample(notebook: str, tmp_path: Path, *, seed: int, rename_org: str | None = None,
                               new_name: str = HOSTILE_ORG, parameters: dict | None = None,
                               scenario: dict | None = None):
    """Write a small sample (of ``scenario`` merged over the default), execute ``notebooks/<notebook>`` on it
    with papermill.

    ``rename_org`` gives that organisation a hostile name (CRM text that looks
    like HTML), which must never reach a page as markup.

    Returns (summary JSON, executed notebook JSON, Sample).
    """
    import papermill

    from quarterpanic.sample import write_sample

    data_dir = tmp_path / "data"
    sample = write_sample(data_dir, scenario=scenario, seed=seed, scale="small")
    if rename_org:
        folder = next(p.parent for p in data_dir.glob("*/org.yaml") if f"org: {rename_org}" in p.read_text())
        org_yaml = folder / "org.yaml"
        org_yaml.write_text(org_yaml.read_text().replace(f"org: {rename_org}", f"org: '{new_name}'"))
    summary_path = tmp_path / "summary.json"
    out = tmp_path / notebook
    papermill.execute_notebook(
        str(ROOT / "notebooks" / notebook), str(out),
        parameters={"data_dir": str(data_dir), "summary_path": str(summary_path), **(parameters or {})},
        cwd=str(tmp_path), progress_bar=False,
    )
    return json.loads(summary_path.read_text()), json.loads(out.read_text()), sample


# -- runs: tiny notebooks, a suite of them, the CLI ------------------------------------------------
XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(3)>',
    "[click me](javascript:alert(4))",
]


REAL_NAMES = ["Alice Archer", "Bob Baker"]
# Effects a test states for itself where its goal was set at them, whatever the default scenario's: the issue-15
# audit's "today's effect", decay 35 points and a 3x surge.
TODAYS_EFFECT = {"name": "today's effect", "panic": {"qualification_decay": 0.35, "reactive_order_taking": 3.0}}



def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """A notebook of ("markdown" | "code" | "parameters", source) cells with the python3 kernel."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path



def report_notebook(path: Path) -> Path:
    """Markdown headings, stdout, a warning and stderr, CRM names (hostile and real), a chart, a summary."""
    return write_notebook(path, [
        ("markdown", "# Alpha report\nWhat the alpha report shows."),
        ("parameters", "\n".join([
            'data_dir = "data"  # folder of exports',
            "alpha = 0.05  # false discovery rate",
            'label = "default label"  # a label to print',
            "pseudonymize = False  # replace owner names",
            "summary_path = None  # where the summary JSON goes",
        ])),
        ("markdown", "## Section one"),
        ("code", "\n".join([
            "import sys, warnings",
            'print("label is", label, "alpha is", alpha)',
            'warnings.warn("stray warning from a library")',
            'print("noise on stderr", file=sys.stderr)',
        ])),
        ("code", "\n".join([
            "import pandas as pd",
            "from IPython.display import Markdown, display",
            "from quarterpanic.report.safe import escape_text, pseudonymize_names",
            f"hostile = {XSS!r}",
            "display(pd.DataFrame({'account': hostile, 'amount': range(len(hostile))}))",
            "display(Markdown('Raw: ' + ' and '.join(hostile)))",
            "display(Markdown('Escaped: ' + escape_text(hostile[1])))",
            f"owners = pd.DataFrame({{'owner': {REAL_NAMES!r}, 'deals': [3, 4]}})",
            "if pseudonymize:",
            "    owners = pseudonymize_names(owners, ['owner'])",
            "display(owners)",
        ])),
        ("markdown", "## Section two"),
        ("code", "\n".join([
            "import matplotlib.pyplot as plt",
            "fig, ax = plt.subplots(figsize=(4, 2))",
            "ax.plot([1, 2, 3])",
            "plt.show()",
        ])),
        ("code", "\n".join([
            "from quarterpanic.report.artifacts import save_summary",
            "save_summary({'headline': 'Alpha looks calm', 'alpha': alpha, 'label': label,",
            "              'owners': list(owners['owner'])}, summary_path)",
        ])),
    ])



def broken_notebook(path: Path) -> Path:
    return write_notebook(path, [
        ("markdown", "# Broken report"),
        ("parameters", "summary_path = None  # where the summary JSON goes"),
        ("code", 'print("before the failure")'),
        ("code", 'raise ValueError("boom <b>bold</b>")'),
        ("code", 'print("never printed")'),
    ])



def panic_notebook(path: Path) -> Path:
    return write_notebook(path, [
        ("markdown", "# Panic index"),
        ("parameters", "threshold = 2.0  # panic level\nsummary_path = None  # where the summary JSON goes"),
        ("code", "\n".join([
            "from quarterpanic.report.artifacts import save_summary",
            "save_summary({'headline': 'Northwind <script>alert(2)</script> panicked in FY2026-Q3',",
            "              'threshold': threshold}, summary_path)",
        ])),
    ])



def dying_notebook(path: Path) -> Path:
    return write_notebook(path, [
        ("markdown", "# Dies"),
        ("code", "import os\nos._exit(1)"),
    ])



def sleeping_notebook(path: Path) -> Path:
    return write_notebook(path, [
        ("markdown", "# Sleeps"),
        ("code", "import time\ntime.sleep(60)"),
    ])



def make_suite(root: Path) -> dict[str, Path]:
    """Notebooks, a data folder and two layered parameter files under ``root``."""
    nbs = root / "notebooks"
    nbs.mkdir(parents=True)
    data = root / "data" / "acme"
    data.mkdir(parents=True)
    (data / "opportunities.csv").write_text("opportunity_id,account\n1,a\n2,b\n3,c\n")
    (data / "org.yaml").write_text("org: Acme\n")
    (root / "base.yaml").write_text("alpha: 0.1\nlabel: from base\n")
    (root / "layer.yaml").write_text("alpha: 0.01\npseudonymize: true\n")
    return {
        "root": root,
        "data": root / "data",
        "report": report_notebook(nbs / "01_alpha.ipynb"),
        "broken": broken_notebook(nbs / "02_broken.ipynb"),
        "panic": panic_notebook(nbs / "04_panic.ipynb"),
        "base": root / "base.yaml",
        "layer": root / "layer.yaml",
    }



def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["run", *args])
    return code, err.getvalue()



def by_name(manifest):
    return {nb["name"]: nb for nb in manifest["notebooks"]}



def run_on_in_process_dask(**run_args) -> runner.RunReport:
    """:func:`runner.run` on a Dask cluster of one in-process worker (papermill changes the
    working directory, so two workers would collide in one process)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        return runner.run(executor=executors.DaskExecutor(client=client), **run_args)



def assert_same_entries(local: dict, other: dict, keys: list[str]) -> None:
    """Every entry of ``other`` (manifest entries by name) agrees with ``local``'s on ``keys``."""
    for name in other:
        for key in keys:
            assert local[name][key] == other[name][key], (name, key)



def report_cards(index: str) -> dict[str, str]:
    """Each report's entry of an index page, keyed by its page name, without the duration."""
    cards = re.findall(r'<li class="qp-report".*?</li>', index, re.DOTALL)
    return {re.search(r'href="([^"]+)"', c).group(1): re.sub(r"[\d.]+ s<", "", c) for c in cards}


# -- real name fields: a sample whose owners and accounts carry markup ------------------------------
NAME_PAYLOAD = " <img src=x onerror=alert(7)>"


def write_hostile_names_sample(data_dir: Path, *, seed: int = 7,
                               org: str = "Globex Corporation") -> dict[str, list[str]]:
    """Write a small sample whose ``org`` has every owner and account name followed by :data:`NAME_PAYLOAD`.

    The names are changed in the exports' text, as a CRM export would carry them. Returns
    ``{"owners": [...], "accounts": [...]}``: the real (unchanged) names, which a pseudonymised page must never show.
    """
    from quarterpanic.sample import write_sample

    sample = write_sample(data_dir, seed=seed, scale="small")
    opps = sample.tables["opportunities"]
    opps = opps[opps["org"] == org]
    names = {"owners": sorted(opps["owner"].dropna().unique()), "accounts": sorted(opps["account"].dropna().unique())}
    # One pass, longest name first, so that a name inside a longer one is not marked twice.
    longest_first = sorted(names["owners"] + names["accounts"], key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(name) for name in longest_first))
    folder = next(p.parent for p in data_dir.glob("*/org.yaml") if f"org: {org}" in p.read_text())
    for export in folder.glob("*.csv"):
        raw = export.read_bytes()
        encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:  # a vendor writing Windows-1252; written back the same way
            encoding, text = "cp1252", raw.decode("cp1252")
        export.write_bytes(pattern.sub(lambda m: m.group(0) + NAME_PAYLOAD, text).encode(encoding))
    return names


class NotebookOutputChecks:
    """What every executed notebook shows its reader, checked the same way for each notebook.

    A notebook's test module subclasses it as ``TestOutputs`` and sets ``min_images``; the module's ``executed``
    fixture returns the notebook's summary, the executed notebook, then anything else.
    """

    min_images: int

    def test_no_cell_failed(self, executed):
        outputs = notebook_outputs(executed[1])
        assert [o for o in outputs if o["output_type"] == "error"] == []

    def test_draws_its_charts(self, executed):
        images = [o for o in notebook_outputs(executed[1]) if "image/png" in o.get("data", {})]
        assert len(images) >= self.min_images

    def test_crm_text_in_outputs_is_escaped(self, executed):
        for output in notebook_outputs(executed[1]):
            data = output.get("data", {})
            for kind in ("text/html", "text/markdown"):
                assert "<img" not in "".join(data.get(kind, "")), f"raw CRM text in {kind} output"


def notebook_outputs(notebook) -> list:
    """Every output of every cell of an executed notebook."""
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


# -- generated samples beside their truth -----------------------------------------------------------
SAMPLE_BANT = ["bant_budget", "bant_authority", "bant_need", "bant_timeline"]


def created_deals_with_truth(sample) -> pd.DataFrame:
    """A generated sample's deals of complete quarters with creation-date fiscal features (``c_``), the
    truth of their creation quarter, ``qualified`` by the default rule and ``late`` (created from the onset on)."""
    from quarterpanic.calendar import annotate_by_org

    calendars = {org: info["fiscal_calendar"] for org, info in sample.orgs.items()}
    opps = annotate_by_org(sample.tables["opportunities"], "created_at", calendars, prefix="c_")
    truth = sample.truth_frame().rename(columns={"quarter": "c_quarter"})
    opps = opps.merge(truth, on=["org", "c_quarter"], how="left")
    opps = opps[opps["open"].eq(False)].copy()
    flags = opps[SAMPLE_BANT].astype(int).sum(axis=1) >= 3
    opps["qualified"] = flags & opps["next_step"].fillna("").str.strip().ne("")
    opps["late"] = opps["c_week_of_quarter"] >= opps["onset_week"]
    return opps


def qualification_drop(opps: pd.DataFrame) -> tuple[float, float]:
    """Early minus late qualification rate of ``opps`` (from :func:`created_deals_with_truth`) and its SE."""
    late, early = opps.loc[opps["late"], "qualified"], opps.loc[~opps["late"], "qualified"]
    return early.mean() - late.mean(), float(np.sqrt(early.var() / len(early) + late.var() / len(late)))
def sell_or_do_dataset(seed=0, *, per_day=2.0, drop=0.5, crunch_drop=0.0, quarters=8, large_wins_per_quarter=2,
                       weeks_after=4, crunch_weeks=3, leads_drop=None, dispersion=20.0, org="A",
                       size_class="small"):
    """Calendar-year quarters from 2023 in which deals are created on working days (Mon-Fri) only, and
    creation falls by ``drop`` in the ``weeks_after`` × 7 days after each large win's close date (and by
    ``crunch_drop`` in the last ``crunch_weeks`` fiscal weeks of each quarter), with gamma-distributed
    week-to-week noise (shape ``dispersion``) shared by a week's days.

    Large wins (amount 100 000) are won deals created in the December before; regular wins (a tenth of the
    new deals, amounts near 3 000) are far below. With ``leads_drop`` a leads table follows the same pattern.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-01")
    end = start + pd.DateOffset(months=3 * quarters) - pd.Timedelta(days=1)
    days = pd.date_range(start, end, freq="D")
    quarter_start = days.to_period("Q").start_time
    day_of_quarter = (days - quarter_start).days
    days_in_quarter = days.to_period("Q").end_time.normalize() - quarter_start
    week = day_of_quarter // 7
    last_week = np.minimum(week, (days_in_quarter.days + 1 + 3) // 7 - 1)  # 13 weeks, the last 6-9 days long
    week_id = np.asarray(days.year * 100 + days.quarter * 20 + last_week)
    crunch = np.asarray(last_week >= (days_in_quarter.days + 1 + 3) // 7 - crunch_weeks)
    large_close = start + pd.to_timedelta(rng.integers(0, len(days), large_wins_per_quarter * quarters), unit="D")
    post = np.zeros(len(days), dtype=bool)
    for close in (large_close - start).days:
        post[close: close + 7 * weeks_after] = True
    working = np.asarray(days.day_of_week < 5)

    def created_stamps(change):
        _, week_pos = np.unique(week_id, return_inverse=True)
        noise = rng.gamma(dispersion, 1 / dispersion, week_pos.max() + 1)[week_pos]
        mean = (per_day * 7 / 5 * working * noise * np.where(post, 1 - change, 1.0)
                * np.where(crunch, 1 - crunch_drop, 1.0))
        counts = rng.poisson(mean)
        return pd.Series(np.repeat(days.to_numpy(), counts)) + pd.to_timedelta(
            rng.uniform(0, 1, counts.sum()), unit="D")

    created = created_stamps(drop)
    n = len(created)
    won = rng.random(n) < 0.1
    regular = pd.DataFrame({
        "opportunity_id": [f"{org}{i}" for i in range(n)], "created_at": created,
        "close_date": created + pd.Timedelta(days=30), "is_closed": True, "is_won": won,
        "amount": rng.lognormal(8, 0.3, n)})
    large = pd.DataFrame({
        "opportunity_id": [f"{org}L{i}" for i in range(len(large_close))],
        "created_at": pd.Timestamp("2022-12-20") + pd.to_timedelta(rng.uniform(0, 5, len(large_close)), unit="D"),
        "close_date": large_close, "is_closed": True, "is_won": True, "amount": 100_000.0})
    opps = pd.concat([regular, large], ignore_index=True).assign(
        org=org, size_class=size_class, owner="o", segment="SMB")
    opps["stage"] = np.where(opps["is_won"], "Closed Won", "Closed Lost")
    tables = {"opportunities": canonical_table("opportunities", opps)}
    if leads_drop is not None:
        stamps = created_stamps(leads_drop)
        tables["leads"] = canonical_table("leads", pd.DataFrame({
            "org": org, "lead_id": [f"{org}-lead{i}" for i in range(len(stamps))], "created_at": stamps,
            "status": "Open"}))
    return Dataset.from_tables(tables, {org: {"size_class": size_class}}, as_of=end + pd.Timedelta(days=15))


# -- a fast qualification-decay simulator (features directly, no exports) --------------------------
DECAY_ORGS = {  # the default scenario's organisations at scale "small": deals a quarter, sellers, base rate
    "small": (36, 3, 0.70),
    "mid": (180, 9, 0.72),
    "enterprise": (360, 24, 0.68),
}


def decay_features(seed, *, drop=0.35, shape="step", quarters=8, panic_share=0.5, onsets=(7, 11),
                   seller_sd=0.05, quarter_sd=0.02, orgs=DECAY_ORGS, panic_orgs=None):
    """Opportunity features of simulated organisations, with the truth of every quarter.

    Each org's deals are spread evenly over 13 weeks (the small one creates half as many in its last
    3 weeks, as the generator's studio does); a deal is qualified with the seller's rate (org rate +
    seller and quarter random effects) minus ``drop`` × ``decay_intensity`` in panic quarters. Panic
    quarters (``panic_share`` of them) and onsets (uniform in ``onsets``, inclusive) are drawn per
    seed. Returns ``(features, truth)``; truth has ``org``, ``quarter``, ``size_class``, ``panic``,
    ``true_onset``, ``shape`` and ``qualification_decay`` (the average drop over the deals created from
    the onset on, the estimand).
    """
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in ("org", "quarter", "quarter_start", "week_of_quarter", "qualified", "owner")}
    truth = []
    panic_orgs = list(orgs) if panic_orgs is None else list(panic_orgs)
    for size_class, (per_quarter, sellers, rate) in orgs.items():
        seller_rate = rate + rng.normal(0, seller_sd, sellers)
        panicking = set(rng.choice(quarters, int(round(panic_share * quarters)), replace=False).tolist())
        week_weight = np.where((size_class == "small") & (np.arange(1, 14) > 10), 0.5, 1.0)
        for q in range(quarters):
            n = rng.poisson(per_quarter)
            weeks = rng.choice(np.arange(1, 14), n, p=week_weight / week_weight.sum())
            owner = rng.integers(0, sellers, n)
            panic = drop > 0 and size_class in panic_orgs and q in panicking
            onset = int(rng.integers(onsets[0], onsets[1] + 1)) if panic else None
            effect = drop * decay_intensity(weeks, onset, shape) if panic else np.zeros(n)
            p = np.clip(seller_rate[owner] + rng.normal(0, quarter_sd) - effect, 0, 1)
            for name, values in (("org", [size_class] * n), ("quarter", [f"Q{q:02d}"] * n),
                                 ("quarter_start", [pd.Timestamp("2024-01-01") + pd.DateOffset(months=3 * q)] * n),
                                 ("week_of_quarter", weeks), ("qualified", rng.random(n) < p), ("owner", owner)):
                columns[name].append(np.asarray(values))
            late = weeks >= onset if panic else np.zeros(n, bool)
            truth.append({"org": size_class, "quarter": f"Q{q:02d}", "size_class": size_class, "panic": panic,
                          "true_onset": onset, "shape": shape,
                          "qualification_decay": float(effect[late].mean()) if late.any() else 0.0})
    features = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    features = features.assign(quarter_complete=True, segment="SMB", lead_source="Web",
                               owner="o" + features["owner"].astype(str))
    return features, pd.DataFrame(truth)

# -- the decay detector on generated samples (the statistical tests of qualification decay) -------------
GENERATOR_ORGS = ("Brightline Studio", "Northwind Traders", "Globex Corporation")


def generated_decay_scenario(drop, seller_fraction=1.0, spread=False):
    """Panics drawn per seed (quarters, onsets, shapes), with the effect and pattern stated here."""
    draw = {"draw": {"probability": 0.5, "onset_week": {"integers": [7, 11]}}}
    return {
        "panic": {"qualification_decay": drop},
        "pattern": {"shape": {"choice": ["step", "ramp"]}, "ramp_weeks": None, "seller_fraction": seller_fraction,
                    "spread": spread, "segments": None},
        "seller_sd": 0.3,
        "confounders": {"q4_volume": 1.0, "month_end_close_share": 0.0},
        "orgs": {org: {"panic_quarters": draw} for org in GENERATOR_ORGS},
    }


def decay_oracle_intensity(weeks, onset, shape, seller_fraction, spread):
    """Each deal's expected share of the full drop: the shape, times the share of sellers reached when
    it spreads (a constant share scales out of the oracle's test)."""
    intensity = decay_intensity(weeks, onset, shape)
    if spread:
        intensity = intensity * (seller_fraction + (1 - seller_fraction) *
                                 decay_intensity(weeks, onset, "ramp"))
    return intensity


def generated_decay_runs(override, seeds, alpha=0.05):
    """Per complete org × quarter: the detector's finding, the truth and the oracle's p-value."""
    frames = []
    for seed in seeds:
        generated = generate(override, seed=seed, scale="default")
        features = opportunity_features(Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of))
        params = {"by_segment": False}
        roles = quarter_roles(features, {**defaults(), **params})
        found = decay_findings(features, params, roles=roles)
        truth = generated.truth_frame().rename(columns={"onset_week": "true_onset", "shape": "true_shape"})
        truth["size_class"] = truth["org"].map({org: info["size_class"] for org, info in generated.orgs.items()})
        merged = found.merge(truth, on=["org", "quarter"], validate="one_to_one")
        merged = merged[~merged["open"]]
        deals_of = features.groupby(["org", "quarter"])
        oracle = {}
        for row in merged[merged["panic"]].itertuples(index=False):
            deals = deals_of.get_group((row.org, row.quarter))
            oracle[(row.org, row.quarter)] = oracle_decay_p_value(
                deals["qualified"].to_numpy(), decay_oracle_intensity(
                    deals["week_of_quarter"].to_numpy(), int(row.true_onset), row.true_shape,
                    float(row.seller_fraction), bool(row.spread)))
        merged["oracle_p"] = [oracle.get(key, np.nan) for key in zip(merged["org"], merged["quarter"])]
        at_truth = decay_candidates(features, params, roles=roles).rename(
            columns={"onset_week": "true_onset", "shape": "true_shape", "p_unadjusted": "pooled_oracle_p"})
        truth_key = ["org", "quarter", "true_onset", "true_shape"]
        at_truth = at_truth[truth_key + ["pooled_oracle_p"]].astype({"true_onset": float})
        merged = merged.merge(at_truth, on=truth_key, how="left", validate="many_to_one")
        frames.append(merged.assign(seed=seed))
    out = pd.concat(frames, ignore_index=True)
    out["detected"] = (out["p_value"] < alpha) & (out["estimate"] > 0)
    out["oracle_detected"] = out["oracle_p"] < alpha
    out["pooled_oracle_detected"] = out["pooled_oracle_p"] < alpha
    out["covered"] = (out["ci_low"] <= out[DECAY]) & (out[DECAY] <= out["ci_high"])
    for column, off in (("onset_week", "onset_off"), ("averaged_onset_week", "averaged_onset_off")):
        out[off] = (out[column].astype(float) - out["true_onset"].astype(float)).abs()
    return out


def decay_power_table(runs):
    """Power of the detector and of the two oracles in panic quarters, by true shape and size class, and the
    ratios: ``oracle`` compares the quarter's own weeks at the true onset and shape, ``pooled_oracle`` is the
    detector's own pooled test at the true candidate (no search)."""
    panic = runs[runs["panic"]]
    table = panic.groupby(["true_shape", "size_class"])[
        ["detected", "oracle_detected", "pooled_oracle_detected"]].mean()
    table["ratio"] = table["detected"] / table["oracle_detected"]
    table["pooled_ratio"] = table["detected"] / table["pooled_oracle_detected"]
    table["quarters"] = panic.groupby(["true_shape", "size_class"]).size()
    return table


def mid_and_enterprise(runs):
    return runs[runs["size_class"].isin(["mid", "enterprise"])]


def assert_power_near_the_oracle(table, *, share=0.85, min_oracle=0.5, min_quarters=90, oracle="oracle_detected"):
    """Every shape's mid-size and enterprise power reaches ``share`` of the ``oracle``'s power (a
    :func:`decay_power_table` row)."""
    for shape in ("step", "ramp"):
        for size_class in ("mid", "enterprise"):
            row = table.loc[(shape, size_class)]
            detector, oracle_power, quarters = row["detected"], row[oracle], row["quarters"]
            ratio = detector / oracle_power
            assert quarters >= min_quarters and oracle_power > min_oracle, (shape, size_class, oracle, oracle_power)
            assert ratio >= share, f"{shape} {size_class}: {detector:.3f} vs {oracle} {oracle_power:.3f}"


# -- the panic index told the truth (the statistical tests' oracle index) ---------------------------
def oracle_findings(findings: pd.DataFrame, data: Dataset, truth: pd.DataFrame) -> pd.DataFrame:
    """``findings`` with each panic quarter's decay and surge findings replaced by their fits at the true onset and
    shape, without the search adjustment, and the flags re-applied in the run's false-discovery families.

    Decay: :func:`decay_candidates`' candidate at the true onset and shape (the detector's own pooled fit, told when
    and how the drop happened). Surge: :func:`estimate_surge` at the true onset (the rate ratio of the post-onset
    window, the truth's estimand, with its plain interval) and the p-value of :func:`shaped_surge_p_value`, the rate
    test of the true shape. The other components stay as the detectors found them.
    """
    params = defaults()
    panic = truth.loc[truth["panic"] & ~truth["open"], ["org", "quarter", "onset_week", "shape"]]
    panic = panic.astype({"onset_week": int})
    features = opportunity_features(data)
    decay = decay_candidates(features, params, roles=quarter_roles(features, params)).merge(
        panic, on=["org", "quarter", "onset_week", "shape"], validate="one_to_one")
    z = float(norm.isf((1 - params["ci_level"]) / 2))
    decay = decay.assign(ci_low=decay["estimate"] - z * decay["se"], ci_high=decay["estimate"] + z * decay["se"],
                         critical_value=z, p_value=decay["p_unadjusted"], metric=DECAY)
    weekly = analyse_reactive(data, params, secondary=False).weekly
    surge = estimate_surge(weekly[weekly["judged"]], onsets=panic, min_events=int(params["min_requests"]),
                           ci_level=float(params["ci_level"])).assign(metric=SURGE)
    surge = surge[surge["status"] == "ok"].merge(panic, on=["org", "quarter"], suffixes=("", "_true"))
    weeks_of = weekly.groupby(["org", "quarter"])
    surge["p_value"] = [shaped_surge_p_value(weeks_of.get_group((row.org, row.quarter)), int(row.onset_week), row.shape,
                                             row.dispersion) for row in surge.itertuples(index=False)]
    columns = ["estimate", "ci_low", "ci_high", "critical_value", "p_value", "onset_week", "se"]
    keys = ["org", "quarter", "metric"]
    # The surge finding carries no se (its interval is on the log scale); the index reads it off the interval.
    told = pd.concat([decay[keys + columns], surge.assign(se=np.nan)[keys + columns]], ignore_index=True)
    out = findings.copy()
    rows = out[keys].reset_index().merge(told, on=keys).set_index("index")
    rows = rows[out.loc[rows.index, "segment"] == ALL_SEGMENTS]
    out.loc[rows.index, columns] = rows[columns].to_numpy(dtype=object)
    return apply_fdr_of(with_direction(out), params)


def oracle_index(findings: pd.DataFrame, data: Dataset, truth: pd.DataFrame) -> pd.DataFrame:
    """The org-wide panic index of :func:`oracle_findings`, each organisation's true calm quarters its baseline."""
    told = oracle_findings(findings, data, truth)
    calm = truth[~truth["panic"] & ~truth["open"]]
    frames = []
    for org, rows in told.groupby("org"):
        quarters = calm.loc[calm["org"] == org, "quarter"].tolist()
        _, index = index_from_findings(rows, {"baseline_quarters": quarters or None}, data)
        frames.append(index[index["segment"] == ALL_SEGMENTS])
    return pd.concat(frames, ignore_index=True)


def shaped_surge_p_value(weeks: pd.DataFrame, onset: int, shape: str, dispersion: float) -> float:
    """One-sided p-value of a rise in one quarter's unplanned requests per working day shaped as the truth (a testing
    aid): the Poisson GLM of the weekly counts on :func:`decay_intensity` at the true onset and shape, with the
    organisation's quasi-Poisson ``dispersion``. For a step it is :func:`estimate_surge`'s test at the true onset."""
    weeks = weeks[weeks["working_days"] > 0]
    design = np.column_stack([np.ones(len(weeks)), decay_intensity(weeks["week_of_quarter"].to_numpy(), onset, shape)])
    fit = GLM(weeks["unplanned"].to_numpy(dtype=float), design, family=Poisson(),
              offset=np.log(weeks["working_days"].to_numpy(dtype=float))).fit()
    return float(norm.sf(fit.params[1] / (fit.bse[1] * np.sqrt(max(float(dispersion), 1.0)))))


def truth_section_runs(scenario, seeds, analyse, section: str, metrics, validate: str = "one_to_one") -> pd.DataFrame:
    """Per seed (scale small): the findings ``analyse(dataset)`` gives beside the generator's truth section
    ``truth[section]`` (one row per org x quarter, a column per metric) melted to a ``truth`` per finding row,
    with ``open``, ``panic`` and ``seed``; rows of every seed concatenated."""
    frames = []
    for seed in seeds:
        generated = generate(scenario, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        truth = pd.DataFrame(generated.truth[section]).melt(
            id_vars=["org", "quarter", "open", "panic"], value_vars=list(metrics), var_name="metric",
            value_name="truth")
        merged = analyse(data).merge(truth, on=["org", "quarter", "metric"], validate=validate)
        frames.append(merged.assign(seed=seed))
    return pd.concat(frames, ignore_index=True)
