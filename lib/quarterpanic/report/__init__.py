"""The report: what a reader sees, charts, words and HTML pages drawn from what the analysis returned.

It owns the charts and their house theme (``plots``), plain-language sentences and headlines (``words``), one
report helper per notebook (``overview_report``, ``qualification_report``, ``reactive_report``, ``index_report``),
the key figures a notebook records (``artifacts``), what ``quarterpanic detect`` prints (``detect_output``), the
published HTML pages and index (``pages``, templates in ``templates/``), escaping and pseudonyms for CRM text
(``safe``) and what every notebook does first with its data (``notebook``). A new chart is a function in ``plots`` (or the notebook's report helper) taking a tidy frame and an
optional ``ax``. It may import ``analysis``, ``dataset``, ``store`` and the foundation modules; never ``ingest``
(reports show what the analysis returned, not exports), ``run`` or ``cli``.
"""
