"""The ``quarterpanic`` console script.

Each sub-command is a pair of functions in this module: ``_add_<name>``
declares its arguments and ``_cmd_<name>`` runs it and returns the exit code.
User mistakes (:class:`QuarterpanicError`) print one line to stderr and exit
with the error's code (2); programming errors keep their traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from quarterpanic import __version__
from quarterpanic.dataset import Dataset, load_dataset, require_opportunities
from quarterpanic.errors import QuarterpanicError
from quarterpanic.params import parse_cli_value, read_params_file, resolve
from quarterpanic.paths import REPORTS_DIR

if TYPE_CHECKING:
    from quarterpanic.run.runner import RunReport

log = logging.getLogger("quarterpanic")

COMMANDS: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quarterpanic",
        description="Quarter-end panic detection from CRM pipeline exports.",
    )
    parser.add_argument("--version", action="version", version=f"quarterpanic {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


def _add_validate(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "validate",
        help="check every row of CRM exports and report what was rejected",
        description="Read CRM exports, validate every row against the canonical tables and print "
        "a per-file summary. Exit 0: every row accepted; 1: some rows rejected "
        "(listed in the rejects CSV), or the opportunity exports hold no row at all; 2: a file cannot be used.",
    )
    cmd.add_argument("paths", nargs="+", metavar="PATH",
                     help="export file, folder of exports, or data folder with one sub-folder per organisation")
    cmd.add_argument("--profile", metavar="NAME|MAPPING.yaml",
                     help="vendor profile or mapping YAML for every file (default: detected from headers)")
    cmd.add_argument("--table", choices=["opportunities", "history", "leads", "requests", "request_history"],
                     help="only consider profiles producing this table")
    cmd.add_argument("--rejects", metavar="FILE", default=str(REPORTS_DIR / "rejects.csv"),
                     help="where to write the rejected rows as CSV (default: %(default)s)")


def _cmd_validate(args: argparse.Namespace) -> int:
    # pandera (and the dask.dataframe it pulls in) takes a second or more to import; only validate and run read
    # exports themselves, detect on an unchanged folder reads a dataset snapshot without it.
    from quarterpanic.ingest.loading import load_crm, write_rejects

    crm = load_crm(args.paths, profile=args.profile, table=args.table)
    summary = crm.accounting.copy()
    totals = {"file": f"total ({len(summary)} files)", "org": "", "table": "", "profile": "",
              "read": int(summary["read"].sum()), "accepted": int(summary["accepted"].sum()),
              "rejected": int(summary["rejected"].sum()), "ignored": int(summary["ignored"].sum()),
              "unknown_deal": int(summary["unknown_deal"].sum())}
    print(pd.concat([summary, pd.DataFrame([totals])], ignore_index=True).to_string(index=False))
    path = write_rejects(crm.rejects, args.rejects)
    print("\n" + _supported_analyses_text(crm))
    if totals["rejected"]:
        print(f"\n{totals['rejected']} rejected rows written to {path}; the first ones:")
        for reject in crm.rejects.head(5).itertuples(index=False):
            print(f"  {reject.file} row {reject.row}: {reject.reason} ({reject.column or 'value'} = {reject.value!r})")
        return 1
    opportunities = summary[summary["table"] == "opportunities"]
    if len(opportunities) and not int(opportunities["accepted"].sum()):
        files = "export holds" if len(opportunities) == 1 else f"exports ({len(opportunities)} files) hold"
        print(f"\nno opportunity rows: the opportunity {files} a header and nothing else, so there is nothing to "
              "analyse — check the extract that wrote them")
        return 1
    print(f"\nevery row accepted (empty rejects file: {path})")
    return 0


def _supported_analyses_text(crm) -> str:
    # analysis/ and report/ import statsmodels and scipy (seconds); `quarterpanic --help` should not wait for them.
    from quarterpanic.analysis.inputs import supported_analyses
    from quarterpanic.report.words import supported_analyses_lines

    orgs = {name: {"size_class": info.size_class, "fiscal_calendar": info.calendar} for name, info in crm.orgs.items()}
    tables = {name: crm.table(name) for name in ("opportunities", "history", "leads", "requests", "request_history")}
    return "\n".join(supported_analyses_lines(supported_analyses(Dataset.from_tables(tables, orgs))))


COMMANDS.append("validate")


#: Exit code when stdout's reader closed the pipe early (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE = 141

#: ``detect`` exit codes beside 0 and the user-mistake code 2.
EXIT_FLAGGED = 3
EXIT_REJECTED = 4


def _add_detect(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "detect",
        help="find quarter-end panic in a folder of CRM exports",
        description="Run every detector on a folder of CRM exports and print the findings: "
        "a readable table, or with --json the machine-readable document for scheduled jobs. "
        "Both carry the row accounting of every file; rejected rows are also named on stderr. "
        f"Exit 0: done; {EXIT_FLAGGED}: a finding is flagged (with --fail-on-flag); "
        f"{EXIT_REJECTED}: rows were rejected (with --strict); 2: nothing usable (a file cannot be used, "
        "a bad parameter, no opportunity in the data).",
    )
    cmd.add_argument("data_dir", metavar="DATA_DIR", help="folder of exports, one sub-folder per organisation")
    cmd.add_argument("-f", "--parameters", action="append", default=[], metavar="PARAMS.yaml",
                     help="parameter file; repeat to layer (later wins)")
    cmd.add_argument("-p", "--parameter", action="append", nargs=2, default=[], metavar=("NAME", "VALUE"),
                     help="set one parameter (YAML value), after the files")
    cmd.add_argument("--as-of", metavar="DATE", help="analyse the data as it stood on DATE (in-quarter runs)")
    cmd.add_argument("--json", action="store_true", help="print the findings as JSON")
    cmd.add_argument("--fail-on-flag", action="store_true",
                     help=f"exit {EXIT_FLAGGED} when any finding is flagged (for alerting)")
    cmd.add_argument("--strict", action="store_true",
                     help=f"exit {EXIT_REJECTED} when any row of the exports was rejected (the findings are printed)")


def _cmd_detect(args: argparse.Namespace) -> int:
    # run.parameters is imported here for the reason given in _cmd_run; analysis/ and report/ for the reason
    # given in _supported_analyses_text.
    from quarterpanic.analysis.detect import detect
    from quarterpanic.report.detect_output import rejected_rows_warning, report_document, report_table
    from quarterpanic.run.parameters import DataScope, check_scope

    layers = [(str(path), read_params_file(path)) for path in args.parameters]
    layers.append(("-p", {name: parse_cli_value(value) for name, value in args.parameter}))
    if args.as_of:
        layers.append(("--as-of", {"as_of": args.as_of}))
    params, sources = resolve(layers)
    params["data_dir"] = args.data_dir
    # Loaded whole first, so that `orgs`, `segment` and `quarters` naming nothing are refused, listing what exists.
    dataset = load_dataset(args.data_dir, {**params, "orgs": None, "segment": None})
    check_scope(params, sources, DataScope.of_dataset(dataset, args.data_dir))
    if params["orgs"] or params["segment"]:
        dataset = dataset.filter(orgs=params["orgs"], segment=params["segment"])
    require_opportunities(dataset, args.data_dir, params)
    findings = detect(dataset, params)
    print(report_document(dataset, findings, params) if args.json else report_table(dataset, findings, params))
    warning = rejected_rows_warning(dataset.accounting, args.data_dir)
    if warning:
        print(f"quarterpanic detect: warning: {warning}", file=sys.stderr)
    if args.strict and warning:
        return EXIT_REJECTED
    return EXIT_FLAGGED if args.fail_on_flag and bool(findings["flagged"].any()) else 0


COMMANDS.append("detect")


def _add_sample(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "sample",
        help="write a sample CRM with quarter-end panic of known size (and its truth.json)",
        description="Generate sample CRM exports (Salesforce, HubSpot, Jira, a mapped generic CSV) for "
        "a few organisations, with quarter-end panic injected where the scenario says, plus "
        "truth.json saying which effect of which size holds in every org x quarter.",
    )
    cmd.add_argument("--out", required=True, metavar="DIR", help="data folder to write (created if missing)")
    cmd.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    cmd.add_argument("--scale", choices=["small", "default", "large"], default="default",
                     help="small: 8 quarters, ~60%% volume (tests); large: 20 quarters, ~1M opportunities")
    cmd.add_argument("--scenario", metavar="NAME|FILE.yaml",
                     help="shipped scenario name (default, null, minimal: a plain opportunity report only, "
                          "realistic: panics drawn per seed, change: panic stops in one segment after a date) "
                          "or a scenario YAML merged over the default")


def _cmd_sample(args: argparse.Namespace) -> int:
    # The generator validates its tables with pandera, which only this command needs (see _cmd_validate).
    from quarterpanic.sample import write_sample

    out = Path(args.out)
    sample = write_sample(out, scenario=args.scenario, seed=args.seed, scale=args.scale)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        print(f"{path}  ({path.stat().st_size / 1e6:.2f} MB)")
    panic = [f"{r['org']} {r['quarter']} (week {r['onset_week']})" for r in sample.truth["quarters"] if r["panic"]]
    print(f"{len(sample.truth['quarters'])} org x quarter records as of {sample.as_of:%Y-%m-%d %H:%M}; "
          f"panic in {len(panic)}: {', '.join(panic) or 'none'}")
    return 0


COMMANDS.append("sample")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
    try:
        return handler(args)
    except QuarterpanicError as err:
        print(f"quarterpanic {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM/SIGHUP during a run (RunInterrupted)
        print("quarterpanic: interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
    except BrokenPipeError:
        # The reader went away (`quarterpanic detect ... | head`): stop quietly, as a tool killed by SIGPIPE
        # would, and point stdout at /dev/null so that flushing it at exit raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="execute the notebooks and publish code-free HTML reports (the scheduled entry point)",
        description=(
            "Execute the notebooks with papermill into OUT/<run-id>/, export each as HTML without code, "
            "write index.html and manifest.json, then point OUT/latest at the run when every report is "
            "complete (a partial run stays in its own folder). Exit codes: 0 all reports complete, "
            "1 a notebook cell failed, 138 a kernel died, 2 a usage mistake, "
            "130/143/129 stopped by SIGINT/SIGTERM/SIGHUP."
        ),
    )
    p.add_argument("-f", "--parameters-file", dest="parameter_files", action="append", default=[],
                   metavar="PARAMS.yaml", help="YAML parameter file; repeat to layer (later files win)")
    p.add_argument("-p", "--parameter", dest="parameters", action="append", nargs=2, default=[],
                   metavar=("NAME", "VALUE"), help="one parameter, VALUE read as YAML (0.01, true, [a, b])")
    p.add_argument("--out", default="reports", metavar="DIR", help="reports folder (default: reports)")
    p.add_argument("--notebooks", nargs="+", metavar="NAME",
                   help="notebooks to run, by path, name or prefix (default: every notebooks/0*.ipynb)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="notebooks executed in parallel (default 1)")
    p.add_argument("--per-org", nargs="*", metavar="ORG",
                   help="run each notebook that declares `orgs` once per organisation (these, or with no names "
                        "every one in the data folder), into OUT/<run-id>/<org>/")
    p.add_argument("--per-segment", nargs="*", metavar="SEGMENT",
                   help="run each notebook that declares `segment` once per segment (these, or with no names "
                        "every one in the opportunities), into OUT/<run-id>/[<org>/]<segment>/")
    p.add_argument("--run-id", metavar="ID", help="run folder name (default: UTC time and an input hash)")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local processes (default) or a Dask distributed cluster")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address for --executor dask (default: a local cluster of --jobs workers)")
    p.add_argument("--kernel", metavar="NAME", help="Jupyter kernel for every notebook (default: each notebook's own)")
    p.add_argument("--cell-timeout", type=int, metavar="SECONDS",
                   help="stop a notebook as failed when one cell runs longer (default: no limit)")
    p.add_argument("--list-parameters", action="store_true",
                   help="print every notebook's parameters with their help, then exit")


def _cmd_run(args: argparse.Namespace) -> int:
    # papermill, nbformat and nbconvert take seconds to import (jsonschema compiles its format grammars);
    # only this command executes notebooks.
    from quarterpanic.run import executors, runner
    from quarterpanic.run.parameters import format_parameters
    from quarterpanic.run.processes import signals_interrupt

    if args.list_parameters:
        sys.stdout.write(format_parameters(runner.select_notebooks(args.notebooks)))
        return 0
    if args.executor == "dask":
        executor = executors.DaskExecutor(args.scheduler, jobs=args.jobs)
    else:
        if args.scheduler:
            raise QuarterpanicError("--scheduler needs --executor dask")
        executor = executors.LocalExecutor(args.jobs)
    # SIGTERM (a scheduler stopping the job) stops the run like Ctrl-C: kernels and workers are killed.
    with signals_interrupt(), executors.Progress() as progress:
        report = runner.run(
            out_dir=args.out,
            notebooks=args.notebooks,
            parameter_files=args.parameter_files,
            overrides={name: parse_cli_value(value) for name, value in args.parameters},
            executor=executor,
            run_id=args.run_id,
            on_event=progress,
            kernel_name=args.kernel,
            cell_timeout=args.cell_timeout,
            per_org=args.per_org,
            per_segment=args.per_segment,
        )
    print(_run_outcome(report), file=sys.stderr)
    return report.exit_code


def _run_outcome(report: RunReport) -> str:
    """The run's last line: where its index is, whether it is partial, and what ``latest`` shows."""
    ok, total = sum(r.ok for r in report.results), len(report.results)
    where = report.run_dir / "index.html"
    if report.published:
        return f"{where}  ({ok} of {total} reports complete; latest updated)"
    shows = f"latest unchanged: still {report.latest}" if report.latest else "latest unchanged: no complete run yet"
    if ok == total:
        return f"{where}  ({ok} of {total} reports complete; {shows}, which started later)"
    failed = ", ".join(r.name for r in report.results if not r.ok)
    return (f"{where}  (partial run, kept in its own folder: {ok} of {total} reports complete, "
            f"failed: {failed}; {shows})")


COMMANDS.append("run")


if __name__ == "__main__":
    sys.exit(main())
