"""Reading CRM exports: files in, validated canonical tables, rejected rows and row accounting out.

It owns everything between a user's data folder and the canonical tables: reading CSV/XLSX/Parquet exports
(``exports``), vendor profiles and mapping YAML (``profiles``, shipped in ``vendor_profiles/``), parsing values
(``values``), applying a profile (``mapping``), the canonical pandera models (``schemas``), org folders and their
``org.yaml`` (``orgs``), one file's load (``files``), the whole folder's load (``loading``) and the reload cache
(``reload_cache``). A new vendor profile is a YAML file in ``vendor_profiles/``. It may import only
``calendar``, ``params``, ``errors``, ``paths`` and ``util``; it knows nothing of datasets, analyses or reports.
"""
