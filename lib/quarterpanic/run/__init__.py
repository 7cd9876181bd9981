"""``quarterpanic run``: the notebooks executed with papermill, published as HTML, recorded in a manifest.

It owns selecting notebooks and orgs and running them (``runner``), the executors that run notebook tasks locally
or on dask (``executors``), checking a run's parameters against what each notebook declares (``parameters``), the
run's ``manifest.json`` (``manifest``) and claiming the run folder and switching ``latest`` (``publish``). It may
import ``report``, ``analysis``, ``dataset``, ``ingest``, ``store`` and the foundation modules; only ``cli`` imports
it.
"""
