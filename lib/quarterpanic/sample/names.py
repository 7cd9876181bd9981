"""Names and ids: sellers, accounts, and record ids in the style of each CRM."""
from __future__ import annotations

import numpy as np
import pandas as pd

from quarterpanic.sample.plan import OrgPlan

# -- people and accounts --------------------------------------------------------------------------
FIRST_NAMES = (
    "Anna", "Ben", "Chloé", "David", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Karin", "Lars",
    "Maya", "Nils", "Olivia", "Pablo", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wim", "Yara", "Zoe",
    "Amélie", "Jürgen", "Søren", "Noémie", "Björn", "Lucía", "Marek", "Priya", "Kenji", "Aisha",
)
LAST_NAMES = (
    "Bauer", "Cohen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jansen", "Kowalski",
    "Larsen", "Martin", "Nguyen", "Okafor", "Peters", "Quinn", "Rossi", "Schmidt", "Tanaka", "Urban",
    "Visser", "Weiß", "Young", "Zimmermann", "Müller", "Lefèvre", "Novák", "Brandão", "Øster", "Walsh",
)
ACCOUNT_STEMS = (
    "Acme", "Blue Harbor", "Cobalt", "Delta Freight", "Evergreen", "Fjord", "Granite", "Helios", "Ironwood",
    "Juniper", "Keystone", "Lumen", "Meridian", "Northstar", "Orchid", "Pinnacle", "Quartz", "Redwood",
    "Summit", "Tidewater", "Umbra", "Vantage", "Willow", "Xenon", "Yellowstone", "Zephyr", "Atlas", "Beacon",
    "Cedar", "Driftwood", "Ember", "Falcon", "Garnet", "Horizon", "Indigo", "Jade", "Kestrel", "Lighthouse",
)
ACCOUNT_WORDS = ("", "Logistics", "Systems", "Foods", "Health", "Energy", "Partners", "Labs", "Retail", "Media",
                 "Analytics", "Manufacturing")
ACCOUNT_SUFFIXES = ("Ltd", "Inc.", "GmbH", "B.V.", "S.A.", "AG", "Group", "Holdings", "& Co.", "LLC")
ACCENTED_ACCOUNTS = (
    "Müller & Söhne GmbH", "Société Générale de Café", "Zürich Rückversicherung AG", "Crème Brûlée Bistro SARL",
    "Björk Möbler AB", "Café Noir Lyon S.A.", "Größenwahn Verlag KG", "Ætna Façades Ltd",
)


def draw_people(plan: OrgPlan, rng: np.random.Generator) -> dict:
    n = plan.n_sellers
    combos = np.array([f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES], dtype=object)
    if n > len(combos):  # large scale: numbered names beyond the combinations
        combos = np.concatenate([combos, np.array([f"Seller {i}" for i in range(n - len(combos))], dtype=object)])
    names = combos[rng.permutation(len(combos))[:n]]
    team = np.arange(n) % len(plan.team_names)
    weight = rng.gamma(4.0, 1.0, n)
    weight /= weight.sum()
    p0 = float(plan.spec.get("qualification_rate", 0.7))
    request_weight = weight
    if plan.seller_sd > 0:
        # Seller random effects: each seller's base qualification rate (logit scale) and propensity to
        # file requests (log scale) vary with sd seller_sd; the org's request rate stays the same.
        qual = 1.0 / (1.0 + np.exp(-(np.log(p0 / (1.0 - p0)) + rng.normal(0.0, plan.seller_sd, n))))
        request_weight = weight * np.exp(rng.normal(0.0, plan.seller_sd, n))
        request_weight /= request_weight.sum()
    else:
        qual = np.clip(p0 + rng.uniform(-0.05, 0.05, n), 0.0, 1.0)
    n_accounts = max(40, int(plan.spec["opportunities_per_quarter"] * plan.volume))
    combos = len(ACCOUNT_STEMS) * len(ACCOUNT_WORDS) * len(ACCOUNT_SUFFIXES)
    pick = rng.choice(combos, n_accounts, replace=n_accounts > combos)
    stem, rest = np.divmod(pick, len(ACCOUNT_WORDS) * len(ACCOUNT_SUFFIXES))
    word, suffix = np.divmod(rest, len(ACCOUNT_SUFFIXES))
    accounts = np.array(
        [" ".join(filter(None, (ACCOUNT_STEMS[s], ACCOUNT_WORDS[w], ACCOUNT_SUFFIXES[x])))
         for s, w, x in zip(stem, word, suffix)],
        dtype=object,
    )
    if plan.spec["format"] == "salesforce":
        accounts[rng.choice(n_accounts, len(ACCENTED_ACCOUNTS), replace=False)] = ACCENTED_ACCOUNTS
    if n_accounts > combos:  # large scale: number the repeats
        repeat = pd.Series(accounts).groupby(accounts).cumcount().to_numpy()
        accounts = np.where(repeat > 0, accounts + " " + (repeat + 1).astype(str), accounts)
    account_weight = 1.0 / np.arange(1, n_accounts + 1) ** 0.8
    return {
        "names": names,
        "team": team,
        "weight": weight,
        "qualification": qual,
        "request_weight": request_weight,
        "accounts": accounts,
        "account_weight": account_weight / account_weight.sum(),
    }


# -- ids and canonical dtypes ---------------------------------------------------------------------
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_SF_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_SF_PREFIX = {"opportunity": "006", "lead": "00Q"}


def record_ids(plan: OrgPlan, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ids in the style of the org's CRM (Salesforce 18-char, HubSpot numeric, Jira keys, plain)."""
    fmt = plan.spec["format"]
    if kind == "request":
        project = plan.spec.get("jira_project") or "".join(w[0] for w in plan.name.split()).upper() + "OPS"
        return np.array([f"{project}-{i}" for i in range(101, 101 + n)], dtype=object)
    if fmt == "salesforce":
        return _salesforce_ids(_SF_PREFIX[kind], n, rng)
    if fmt == "hubspot":
        start = {"opportunity": 9_000_000_000, "lead": 4_000_000_000}[kind]
        return (start + np.cumsum(rng.integers(1, 5000, n))).astype(str).astype(object)
    prefix = {"opportunity": "OPP", "lead": "LEAD"}[kind]
    return np.array([f"{prefix}-{i:05d}" for i in range(1, n + 1)], dtype=object)


def _salesforce_ids(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """18-character Salesforce ids: a 15-character case-sensitive id + its 3-character checksum."""
    counter = int(rng.integers(10_000_000, 50_000_000)) + np.arange(n)
    digits = np.empty((n, 7), dtype="<U1")
    for pos in range(6, -1, -1):
        counter, rem = np.divmod(counter, 62)
        digits[:, pos] = _BASE62[rem]
    body = np.char.add(prefix + "5J000", np.ascontiguousarray(digits).view("<U7").ravel())
    chars = np.ascontiguousarray(body.astype("<U15")).view("<U1").reshape(n, 3, 5)
    # Each 5-character chunk's upper-case positions, as bits, pick one checksum letter.
    index = (np.char.isupper(chars) * (1 << np.arange(5))).sum(axis=2)
    suffix = np.ascontiguousarray(np.array(list(_SF_CHECKSUM))[index]).view("<U3").ravel()
    return np.char.add(body, suffix).astype(object)
