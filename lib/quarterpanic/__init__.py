"""quarterpanic: quarter-end panic detection for B2B sales pipelines.

CRM pipeline exports in (Salesforce, HubSpot, Dynamics, Jira, any mapped
CSV/Excel/Parquet), evidence out: qualification decay, reactive
order-taking, a panic index per organisation and quarter.
"""
from __future__ import annotations

__version__ = "0.1.0"
