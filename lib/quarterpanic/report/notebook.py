"""What every notebook does first: the data as the page shows it, and the quarters it shows.

:func:`notebook_view` is the one call the four notebooks make after loading:
it replaces owner, account and opportunity names with pseudonyms when the
``pseudonymize`` parameter is set (before anything is computed, so every
table, chart, sentence and summary shows ``Owner 03``), and it holds the
``quarters`` selection, so that no notebook filters quarters by hand.
Imports the analysis (for the quarters' coverage) and :mod:`quarterpanic.report.safe`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from quarterpanic.analysis import overview
from quarterpanic.dataset import Dataset, require_opportunities, resolve_data_dir
from quarterpanic.params import defaults
from quarterpanic.report.safe import pseudonymize_tables


@dataclass
class NotebookView:
    """A notebook's dataset (pseudonymised when asked) and its quarter selection.

    ``dataset`` is what every analysis of the page reads; ``params`` the
    merged parameters; ``data_folder`` the resolved ``data_dir``.
    """

    dataset: Dataset
    params: dict[str, Any] = field(default_factory=dict)
    data_folder: Path | None = None

    @property
    def orgs(self) -> list[str]:
        """The organisations in the data, sorted."""
        return self.dataset.orgs

    @property
    def quarters(self) -> list[str] | None:
        """The ``quarters`` parameter: labels to show, or None for the default selection."""
        return self.params.get("quarters") or None

    @cached_property
    def coverage(self) -> pd.DataFrame:
        """:func:`quarterpanic.analysis.overview.quarter_coverage` of the dataset (which quarters are complete)."""
        return overview.quarter_coverage(self.dataset.tables(), self.dataset.calendars, self.dataset.as_of)

    def shown(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` (``org, quarter``) in the quarters to show: the ``quarters`` parameter,
        else each organisation's complete quarters (see :func:`quarterpanic.analysis.overview.select_quarters`)."""
        return overview.select_quarters(frame, self.coverage, self.quarters)

    def shown_records(self, records: pd.DataFrame, date_column: str) -> pd.DataFrame:
        """Rows of a canonical table whose ``date_column`` falls in a quarter to show (as :meth:`shown`)."""
        return overview.restrict_to_quarters(records, date_column, self.dataset.calendars, self.coverage,
                                             self.quarters)

    def chosen(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` in the ``quarters`` parameter, or every row when it is None.

        For frames that hold judged (complete) quarters already, such as the panic index.
        """
        return frame[frame["quarter"].isin(self.quarters)] if self.quarters else frame


def notebook_view(dataset: Dataset, params: Mapping[str, Any] | None = None) -> NotebookView:
    """The view every notebook reads: ``dataset`` with pseudonyms when ``params["pseudonymize"]``.

    Parameters
    ----------
    dataset:
        What :func:`quarterpanic.dataset.load_dataset` returned.
    params:
        The notebook's parameters; uses ``pseudonymize``, ``quarters`` and ``data_dir``.

    Raises
    ------
    NoDataError
        When the dataset holds no opportunity: the page stops at its first cell with
        one line saying why, instead of failing in a chart further down.
    """
    params = {**defaults(), **(params or {})}
    require_opportunities(dataset, params["data_dir"], params)
    if params.get("pseudonymize"):
        dataset = replace(dataset, **pseudonymize_tables(dataset.tables()))
    folder = resolve_data_dir(params["data_dir"], must_exist=False)
    return NotebookView(dataset=dataset, params=params, data_folder=folder)
