"""``quarterpanic run``: the notebooks executed with papermill, published as HTML, recorded in a manifest.

It owns selecting notebooks and orgs and running them (``runner``), the executors that run notebook tasks locally
or on dask (``executors``), checking a run's parameters against what each notebook declares (``parameters``), the
run's ``manifest.json`` (``manifest``), claiming the run folder and switching ``latest`` (``publish``) and the
child processes a stopped run must not leave behind (``processes``). It may import ``report``, ``analysis``,
``dataset``, ``ingest``, ``store`` and the foundation modules; only ``cli`` imports it.
"""
