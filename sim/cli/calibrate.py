"""``capsim calibrate``: measure this machine and write calibration files.

``calibrate_app`` is mounted on the main app as ``capsim calibrate``.
Command ``retrieval`` builds real hnswlib / numpy / faiss indexes, times
held-out queries one at a time, and writes a JSON calibration file that
:func:`sim.physics.retrieval.load_calibration` reads.

Bad input prints ``error: <one line>`` on stderr and exits with status 2,
writing nothing.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from sim.cli.app import app, stdout_console, user_errors
from sim.errors import CapsimError
from sim.files import atomic_write_text, regular_file_problem, to_json
from sim.registry import INDEXES

if TYPE_CHECKING:
    from rich.progress import Progress

    from sim.physics.steptable import BenchRow, StepRow
    from sim.spec.target import LLMTarget, Target

calibrate_app = typer.Typer(
    help="Measure this machine and write calibration files for capsim.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_DOCS = "5000,20000,50000"


@calibrate_app.callback()
def calibrate() -> None:
    """Measure this machine and write calibration files for capsim."""


def check_out_file(out: Path, flag: str = "--out") -> None:
    """Refuse an output file path that cannot be written, before measuring anything: a folder,
    a path under a file, a folder that is missing or read-only, or one (such as ``/proc``) where
    no file can be created, which only trying tells."""
    out_dir = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise CapsimError(f"{flag}: {str(out)!r} is a folder; give a file name")
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise CapsimError(f"{flag}: {str(parent)!r} is a file, not a folder")
            break
    if not out_dir.is_dir():
        raise CapsimError(f"{flag}: folder {str(out_dir)!r} does not exist")
    if out.exists() and not out.is_file():
        raise CapsimError(f"{flag}: {str(out)!r} is not a regular file")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise CapsimError(f"{flag}: folder {str(out_dir)!r} is not writable")
    try:  # the output goes to a temporary name there first (sim.files.atomic_write_bytes)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".probe")
    except OSError as e:
        raise CapsimError(f"{flag}: cannot write in folder {str(out_dir)!r} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _whole(text: str) -> int | None:
    """``"1e9"`` -> 10**9; None unless ``text`` is a finite number with no fractional part."""
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def parse_int_list(flag: str, text: str) -> list[int]:
    """``"10,20, 50"`` -> ``[10, 20, 50]``; anything else -> CapsimError naming ``flag``."""
    out = []
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise CapsimError(f"{flag}: needs at least one positive integer")
    for p in parts:
        if not p:
            raise CapsimError(f"{flag}: empty value in {text!r}; use a comma list like 10,20")
        try:
            v: int | None = int(p.replace("_", ""))
        except ValueError:
            v = _whole(p)  # 1e9 is 10^9, as in --set
        if v is None or v <= 0:
            raise CapsimError(f"{flag}: {p!r} is not a positive integer")
        out.append(v)
    return out


def _index_list(text: str) -> list[str]:

    out = []
    for p in (s.strip() for s in text.split(",")):
        if p not in INDEXES:
            raise CapsimError(f"--index: {p!r} is not one of {', '.join(INDEXES.names())}")
        out.append(p)
    return out


@calibrate_app.command("retrieval")
@user_errors
def retrieval(
    docs: Optional[str] = typer.Option(
        None, "--docs", help=f"Corpus sizes, comma list [default: {DEFAULT_DOCS}; with --vectors: all rows left]"
    ),
    dim: Optional[int] = typer.Option(
        None, "--dim", help="Vector dimension [default: 768; with --vectors: the file's]"
    ),
    top_k: int = typer.Option(5, "--top-k", help="Results per query (recall@k is measured at this k)"),
    queries: int = typer.Option(500, "--queries", help="Held-out queries timed per configuration"),
    index: str = typer.Option("hnsw,linear_numpy,linear_python,ivf", "--index", help="Comma list of indexes"),
    M: int = typer.Option(16, "--M", help="HNSW M"),
    ef_construction: int = typer.Option(100, "--ef-construction", help="HNSW ef_construction"),
    ef: str = typer.Option("10,20,50,100,200", "--ef", help="HNSW ef_search values, comma list"),
    nlist: Optional[int] = typer.Option(
        None, "--nlist", help="IVF lists [default: round(4*sqrt(N)) capped at N//39, per N]"
    ),
    nprobe: str = typer.Option("1,4,8,16,32", "--nprobe", help="IVF nprobe values, comma list"),
    vectors: Optional[Path] = typer.Option(
        None, "--vectors", help="Your embeddings (.npy, float16/32, shape (n, d)); queries are held out from them"
    ),
    threads: str = typer.Option("1", "--threads", help="Concurrent query workers, comma list, e.g. 1,2"),
    seed: int = typer.Option(0, "--seed", help="Seed for the corpus, queries and index builds"),
    out: Path = typer.Option(Path("retrieval_calibration.json"), "--out", help="Output JSON file"),
    python_docs: int = typer.Option(
        2000, "--python-docs", help="linear_python is timed on at most this many docs, then scaled to N"
    ),
    python_queries: int = typer.Option(50, "--python-queries", help="Queries timed for linear_python"),
) -> None:
    """Measure real hnsw / linear_numpy / linear_python / ivf indexes and write a calibration file."""
    # deferred: numpy, hnswlib, faiss
    from sim.calibrate.retrieval import RetrievalOptions, run_calibration, write_calibration

    err = Console(stderr=True)
    try:
        docs_l, dim, ef_l, nprobe_l, threads_l, idx_l = _retrieval_lists(docs, dim, ef, nprobe, threads, index, vectors)
        for flag, v in (("--python-docs", python_docs), ("--python-queries", python_queries)):
            if v <= 0:
                raise CapsimError(f"{flag}: {v} is not a positive integer")
        if docs_l and dim:
            _check_corpus_memory(max(docs_l), dim)
        if vectors is not None:
            problem = regular_file_problem(vectors)
            if problem is not None:
                raise CapsimError(f"--vectors {str(vectors)!r} {problem}")
        check_out_file(out)
    except CapsimError as exc:
        _fail(str(exc))

    bar, progress = _progress_bar(err)
    parts = _command_line(docs_l, dim, top_k, queries, idx_l, M, ef_construction, ef_l, nlist, nprobe_l, vectors)
    parts += ["--threads", ",".join(map(str, threads_l)), "--seed", str(seed), "--out", str(out)]
    if "linear_python" in idx_l:
        parts += ["--python-docs", str(python_docs), "--python-queries", str(python_queries)]
    cmd = " ".join(shlex.quote(p) for p in parts)
    try:
        with bar:
            opts = RetrievalOptions(
                docs=docs_l,
                dim=dim,
                top_k=top_k,
                n_queries=queries,
                indexes=idx_l,
                M=M,
                ef_construction=ef_construction,
                ef=ef_l,
                nlist=nlist,
                nprobe=nprobe_l,
                threads=threads_l,
            )
            data = run_calibration(
                opts,
                vectors=vectors,
                seed=seed,
                progress=progress,
                linear_python_docs=python_docs,
                linear_python_queries=python_queries,
                command=cmd,
            )
        write_calibration(data, out)
    except CapsimError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"--out: cannot write {str(out)!r} ({exc.strerror or exc})")

    _summary(data, out)


def _retrieval_lists(
    docs: str | None, dim: int | None, ef: str, nprobe: str, threads: str, index: str, vectors: Path | None
) -> tuple[list[int] | None, int | None, list[int], list[int], list[int], list[str]]:
    """The comma lists of ``calibrate retrieval`` parsed, with the corpus defaults where no --vectors is given."""
    docs_l = parse_int_list("--docs", docs) if docs is not None else None
    if docs_l is None and vectors is None:
        docs_l = parse_int_list("--docs", DEFAULT_DOCS)
    if dim is None and vectors is None:
        dim = 768
    ef_l = parse_int_list("--ef", ef)
    nprobe_l = parse_int_list("--nprobe", nprobe)
    threads_l = parse_int_list("--threads", threads)
    _warn_oversubscribed(max(threads_l))
    return docs_l, dim, ef_l, nprobe_l, threads_l, _index_list(index)


def _progress_bar(err: Console) -> tuple[Progress, Callable[[int, int, str], None]]:
    """The transient progress bar on stderr and the callback the calibration reports to."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # deferred: only when printing

    bar = Progress(
        TextColumn("[bold]calibrate retrieval"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
    )
    task = bar.add_task("starting", total=1)

    def progress(done: int, total: int, msg: str) -> None:
        bar.update(task, completed=done, total=total, description=msg)

    return bar, progress


def _warn_oversubscribed(threads: int) -> None:
    """More search threads than usable cores measure searches waiting for a core: say so."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores:
        typer.echo(
            f"warning: --threads {threads} on {cores} usable cores: those timings measure "
            f"{threads} searches sharing {cores} cores (each waits for a core), not "
            f"{threads} workers on their own cores; measure on the box that will serve retrieval",
            err=True,
        )


def _check_corpus_memory(docs: int, dim: int) -> None:
    """Refuse a corpus whose vectors and index would not fit in the memory available."""
    # deferred: run.bounds loads the simulator (numpy, pydantic)
    from sim.run.bounds import available_memory_bytes

    # float32 corpus + query set + an index of about the same size (hnsw's graph is smaller)
    need = 3 * docs * dim * 4
    have = available_memory_bytes()
    if need > have:
        raise CapsimError(
            f"--docs {docs:,}: a {dim}-dim float32 corpus and its index need about "
            f"{need / 1e9:,.1f} GB, more than the {have / 1e9:,.1f} GB available; measure fewer docs "
            "(capsim extrapolates larger corpora with the fitted scaling law)"
        )


def _command_line(
    docs_l: list[int] | None,
    dim: int | None,
    top_k: int,
    queries: int,
    idx_l: list[str],
    M: int,
    ef_construction: int,
    ef_l: list[int],
    nlist: int | None,
    nprobe_l: list[int],
    vectors: Path | None,
) -> list[str]:
    """The start of the command that reproduces this calibration (written into the file)."""
    parts = ["capsim", "calibrate", "retrieval"]
    if docs_l is not None:
        parts += ["--docs", ",".join(map(str, docs_l))]
    if dim is not None:
        parts += ["--dim", str(dim)]
    parts += ["--top-k", str(top_k), "--queries", str(queries), "--index", ",".join(idx_l)]
    if "hnsw" in idx_l:
        parts += ["--M", str(M), "--ef-construction", str(ef_construction), "--ef", ",".join(map(str, ef_l))]
    if "ivf" in idx_l:
        parts += (["--nlist", str(nlist)] if nlist is not None else []) + ["--nprobe", ",".join(map(str, nprobe_l))]
    if vectors is not None:
        parts += ["--vectors", str(vectors)]
    return parts


def _summary(data: dict, out: Path) -> None:
    k = data["settings"]["top_k"]
    probs = data["probs"]
    i50, i95 = probs.index(0.5), probs.index(0.95)
    t = Table(
        title=f"retrieval calibration, dim {data['settings']['dim']} ({data['corpus']['source']} corpus)",
        box=box.SIMPLE_HEAD,
    )
    for col in ("index", "knob", "N", "threads", "p50 ms", "p95 ms", f"recall@{k}", "build s"):
        t.add_column(col, justify="left" if col in ("index", "knob") else "right", no_wrap=True)
    for r in data["records"]:
        knob = "" if r["knob"] is None else f"{r['knob']}={r['knob_value']}"
        t.add_row(
            r["index"],
            knob,
            f"{r['docs']:,}",
            str(r["threads"]),
            f"{r['values_ms'][i50]:.3g}",
            f"{r['values_ms'][i95]:.3g}",
            f"{r['recall']:.3f}",
            f"{r['build_s']:.2f}",
        )
    con = Console()
    if not con.is_terminal:
        con = Console(width=120)
    con.print(t)
    m = data["machine"]
    con.print(
        f"wrote {out} ({len(data['records'])} records, {len(data['fits'])} scaling fits); "
        f"load average {m.get('loadavg_start')} -> {m.get('loadavg_end')}"
    )
    if data["corpus"]["source"] == "synthetic":
        con.print(
            "the corpus was synthetic, generated to behave like real text embeddings (its parameters "
            "are in the file); your own embeddings are better still: --vectors your_vectors.npy"
        )


if __name__ == "__main__":  # python -m sim.cli.calibrate retrieval ...
    app()


def run_gpu_calibration(
    measurements: Path,
    out: Optional[Path],
    set_: list[str],
    scenario: Optional[Path],
    model: Optional[str],
    gpu: Optional[str],
    dtype_bytes: Optional[float],
    json_: bool,
) -> None:
    # deferred: the fit loads scipy and pydantic
    from sim.calibrate.gpu import fit_gpu, read_measurements, scenario_llm, write_fragment
    from sim.spec.scenario import parse_overrides

    if out is not None:
        check_out_file(out)
    cfg = scenario_llm(scenario, parse_overrides(set_), model, gpu, dtype_bytes)
    data = read_measurements(measurements)
    fit = fit_gpu(cfg, data)
    if out is not None:
        write_fragment(fit, cfg, measurements, out)
    if json_:
        doc = {
            **asdict(fit),
            "fragment": fit.fragment(),
            "model": cfg.model.name,
            "gpu": cfg.gpu.name,
            "out": str(out) if out is not None else None,
        }
        typer.echo(to_json(doc))
        return
    console = stdout_console()
    t = Table(
        title=f"GPU roofline fit: {cfg.model.name or 'model'} on {cfg.gpu.name or 'GPU'} "
        f"(tp {cfg.tensor_parallel}), {fit.rows} steps"
    )
    t.add_column("parameter")
    t.add_column("value", justify="right")

    def pm(k: str) -> str:
        se = fit.stderr.get(k)
        return "" if se is None else f" ± {se:.2g}"

    t.add_row("bw_efficiency", f"{fit.bw_efficiency:.4f}{pm('bw_efficiency')}")
    t.add_row("mfu", f"{fit.mfu:.4f}{pm('mfu')}")
    t.add_row("step_overhead_ms", f"{fit.step_overhead_ms:.4f}{pm('step_overhead_ms')}")
    t.add_row("RMSE (ms)", f"{fit.rmse_ms:.4g}")
    t.add_row("max relative error", f"{fit.max_rel_error:.2%}")
    t.add_row("memory-/compute-bound steps", f"{fit.memory_bound_rows} / {fit.compute_bound_rows}")
    console.print(t)
    for note in fit.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if out is not None:
        console.print(f"wrote {out}", markup=False, highlight=False)


@calibrate_app.command("gpu")
@user_errors
def gpu_command(
    measurements: Path = typer.Argument(
        ..., help="CSV of measured steps: batch_size, context_tokens, new_tokens, step_ms (one row per step)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write {llm: {bw_efficiency, mfu, step_overhead_ms}} as a YAML scenario fragment here."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a dotted key of the scenario: --set llm.tensor_parallel=2"
    ),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="Take model, GPU and dtypes from this scenario."),
    model: Optional[str] = typer.Option(None, "--model", help="Catalog model (default article-8l without --scenario)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Catalog GPU (default h100-sxm without --scenario)."),
    dtype_bytes: Optional[float] = typer.Option(None, "--dtype-bytes", help="Bytes per weight (default 2)."),
    json_: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
) -> None:
    """Fit bw_efficiency, mfu and step_overhead_ms to measured GPU steps."""
    run_gpu_calibration(measurements, out, set_, scenario, model, gpu, dtype_bytes, json_)


app.add_typer(calibrate_app, name="calibrate", help="Measure real runs and write calibration files.")


@calibrate_app.command("routing")
@user_errors
def routing_command(
    out: Path = typer.Option(Path("routing_calibration.json"), "--out", help="Calibration JSON to write."),
    sizes: str = typer.Option("50,100,200,400", "--sizes", help="Canonical question set sizes, comma list."),
    utterances: int = typer.Option(300, "--utterances", help="Shopper utterances routed per size."),
    impls: str = typer.Option(
        "rapidfuzz,rapidfuzz_nocutoff,two_row,numpy_table",
        "--impls",
        help="Edit-distance implementations (rapidfuzz: with score_cutoff; rapidfuzz_nocutoff: without).",
    ),
    threshold: float = typer.Option(0.3, "--threshold", help="Normalised edit distance to accept a match."),
    seed: int = typer.Option(20250607, "--seed"),
    rounds: int = typer.Option(10, "--rounds", help="Interleaved timing rounds (spreads machine noise)."),
) -> None:
    """Time fuzzy routing by edit distance (numpy table, two-row DP, rapidfuzz with and without
    score cutoff) and measure its accuracy."""
    from sim.calibrate.edit_distance import IMPLS  # deferred: numpy
    from sim.calibrate.routing import DEFAULT_QUESTIONS, run_routing_calibration, write_json  # deferred: numpy
    from sim.calibrate.utterances import load_questions  # deferred: numpy

    check_out_file(out)
    size_l = parse_int_list("--sizes", sizes)
    have = len(load_questions(str(DEFAULT_QUESTIONS)))
    if max(size_l) > have:
        raise CapsimError(f"--sizes: {max(size_l)} is more than the {have} canonical questions there are (1..{have})")
    impl_l = [s.strip() for s in impls.split(",") if s.strip()]
    bad = [i for i in impl_l if i not in IMPLS]
    if bad or not impl_l:
        raise CapsimError(f"--impls: {bad[0] if bad else 'nothing'!r} is not one of {', '.join(IMPLS)}")
    if not 0 < threshold < 1:
        raise CapsimError(f"--threshold: {threshold:g} must lie in (0, 1)")
    if utterances < 2 or rounds < 1:
        raise CapsimError("--utterances must be >= 2 and --rounds >= 1")
    data = run_routing_calibration(
        sizes=size_l,
        n_utterances=utterances,
        impls=impl_l,
        threshold=threshold,
        seed=seed,
        rounds=rounds,
        scaling_check_size=100 if 100 in size_l else None,
        progress=lambda msg: typer.echo(msg, err=True),
    )
    path = write_json(data, out)
    for r in data["records"]:
        typer.echo(f"{r['impl']:>18} N={r['questions']:>4}: mean {r['mean_ms']:.4g} ms  p95 {r['p95']:.4g} ms")
    for acc in data["routing_accuracy"]:
        typer.echo(
            f"N={acc['questions']}: routed right {acc['correct']}, wrong {acc['wrong']}, none {acc['none']}, "
            f"off-topic rejected {acc['off_topic_rejected']}"
        )
    typer.echo(f"wrote {path}")


@calibrate_app.command("published")
@user_errors
def published_command(
    out: Path = typer.Option(
        Path("fit.json"), "--out", help="Where to write the fit (the shipped one is sim/data/published/fit.json)."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="Published-steps CSV (default: the shipped one)."),
    resamples: int = typer.Option(100, "--resamples", help="Bootstrap fits over sources for the band."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fit the step-cost defaults to published measurements and report held-out error."""
    from sim.calibrate.published import run_fit  # deferred: scipy, pydantic

    if resamples < 0:
        raise CapsimError(f"--resamples: must be >= 0, got {resamples}")
    check_out_file(out)
    doc = run_fit(data, resamples=resamples, seed=seed)
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    for name, p in doc["presets"].items():
        typer.echo(
            f"{name:>15}: "
            + ", ".join(f"{k} {v:g}" for k, v in p.items())
            + f"  (reference step {doc['reference_step_ms'][name]:.2f} ms)"
        )
    for label, key in (("in sample", "in_sample"), ("held out", "held_out")):
        e = doc[key]
        typer.echo(
            f"{label:>15}: "
            + "; ".join(
                f"{g} MAPE {e[g]['mape_pct']:.1f}% signed {e[g]['signed_mean_pct']:+.1f}% (n={e[g]['n']})"
                for g in ("decode", "prefill", "throughput")
                if e[g]["n"]
            )
        )
    typer.echo(f"wrote {out}")


@calibrate_app.command("llm")
@user_errors
def llm(
    target: Path = typer.Option(..., "--target", help="Target YAML: llm.batched_bench, llm.model_path, llm.cores."),
    out: Path = typer.Option(..., "--out", help="Step table CSV to write (a scenario fragment goes next to it)."),
    from_output: Optional[Path] = typer.Option(
        None, "--from-output", help="Read a captured llama-batched-bench output instead of running it."
    ),
    npp: str = typer.Option("96,256", "--npp", help="Prompt lengths per sequence."),
    ntg: int = typer.Option(32, "--ntg", help="Decode steps per run."),
    npl: str = typer.Option("1,2,3,4", "--npl", help="Batch sizes (parallel sequences)."),
    repeat: int = typer.Option(1, "--repeat", help="Run the benchmark this many times; keep each row's median."),
    via: str = typer.Option(
        "bench",
        "--via",
        help="bench: run llama-batched-bench before the server starts; server: profile the running server "
        "(batches of requests sent together, nothing else sending).",
    ),
) -> None:
    """Profile the LLM engine's step time over batch size and context (isolated), write a step table."""
    from sim.calibrate.llm import step_rows, write_table  # deferred: heavy or only needed by this subcommand
    from sim.spec.target import load_target  # deferred: pydantic

    if via not in ("bench", "server"):
        raise CapsimError(f"--via: must be bench or server, got {via!r}")
    full_target = load_target(target)
    tgt = full_target.llm_endpoint()
    pps, pls = parse_int_list("--npp", npp), parse_int_list("--npl", npl)
    if not 1 <= repeat <= 20:
        raise CapsimError(f"--repeat: must be 1..20, got {repeat}")
    if ntg < 2:
        raise CapsimError("--ntg: must be >= 2")
    if out.exists() and out.is_dir():
        raise CapsimError(f"--out {out}: is a folder; give a .csv file")
    check_out_file(out)  # before profiling: a path under a file or in /proc is refused now
    extra: list[tuple[int, int, int, float, int]] = []
    if via == "server":
        if from_output is not None:
            raise CapsimError("--from-output: reads a llama-batched-bench output; not with --via server")
        rows, extra, source = _profile_server(full_target, pps, ntg, pls, repeat)
    elif from_output is not None:
        rows, source = _read_bench_output(from_output)
    else:
        rows, source = _run_bench(tgt, pps, ntg, pls, repeat)
    steps: list[StepRow] = step_rows(rows)
    if not steps:
        raise CapsimError("no llama-batched-bench result rows in the output")
    if via == "server":
        steps += extra
    write_table(steps, out, source)
    frag = _write_llm_fragment(out, target, source, tgt)
    con = stdout_console()
    con.print(f"{len(steps)} step rows -> {out}; scenario fragment -> {frag}")
    for b, c, n, ms, *mix in steps:
        kind = "mixed  " if mix and mix[0] else ("decode " if n == b else "prefill")
        con.print(f"  {kind} batch {b:>2}  context {c:>6}  new {n:>6}  {ms:9.3f} ms")


def _profile_server(
    full_target: Target, pps: list[int], ntg: int, pls: list[int], repeat: int
) -> tuple[list[BenchRow], list[tuple[int, int, int, float, int]], str]:
    """``--via server``: batches sent together to the running server, then prompts beside decoders."""
    # deferred: the HTTP profiler loads the load generator's modules
    from sim.verify.loadgen import check_reachable
    from sim.verify.step_profile import describe, profile_mixed, profile_server

    tgt = full_target.llm_endpoint()
    check_reachable(full_target.model_copy(update={"retrieval": None}))  # only the LLM is profiled
    rows = profile_server(full_target, pps, ntg, pls, repeat, progress=lambda m: typer.echo(m, err=True))
    extra = profile_mixed(full_target, max(pps), [k for k in pls if k < tgt.parallel], repeat)
    source = describe(full_target, pps, ntg, pls, repeat) + f"; mixed steps: {max(pps)}-token prompt beside decoders"
    return rows, extra, source


def _read_bench_output(from_output: Path) -> tuple[list[BenchRow], str]:
    """``--from-output``: the rows of a captured llama-batched-bench output."""
    from sim.calibrate.llm import parse_batched_bench  # deferred: only needed by this subcommand

    if not from_output.is_file():
        raise CapsimError(f"--from-output: {from_output} does not exist")
    rows = parse_batched_bench(from_output.read_text(errors="replace"))
    return rows, f"llama-batched-bench output {from_output.name}"


def _run_bench(tgt: LLMTarget, pps: list[int], ntg: int, pls: list[int], repeat: int) -> tuple[list[BenchRow], str]:
    """Run llama-batched-bench ``repeat`` times on the target's cores; each row's median."""
    from sim.calibrate.llm import median_rows, parse_batched_bench, run_batched_bench  # deferred: subcommand only

    if not tgt.batched_bench or not tgt.model_path:
        raise CapsimError("--target: llm.batched_bench and llm.model_path are needed to run the benchmark")
    # The server's KV size when the target gives it (attention reads the KV cache it was given).
    ctx = max(tgt.ctx_size, max(pls) * (max(pps) + ntg) + 64)
    runs = [
        parse_batched_bench(
            run_batched_bench(tgt.batched_bench, tgt.model_path, tgt.cores, tgt.threads, pps, ntg, pls, ctx)
        )
        for _ in range(repeat)
    ]
    source = (
        f"llama-batched-bench -t {tgt.threads} on cores {tgt.cores or 'any'}: "
        f"-c {ctx} npp {pps} ntg {ntg} npl {pls} ({Path(tgt.model_path).name}), median of {repeat} run(s)"
    )
    return median_rows(runs), source


def _write_llm_fragment(out: Path, target: Path, source: str, tgt: LLMTarget) -> Path:
    """The scenario fragment next to the step table: the table and the server's batching settings."""
    frag = out.with_suffix(".yaml")
    frag.write_text(
        f"# capsim calibrate llm --target {target}: {source}\n"
        "llm:\n"
        f"  step_table: {out.name}\n"
        f"  max_batch: {tgt.parallel}          # the server's --parallel slots\n"
        f"  max_batched_tokens: {tgt.n_batch}  # the server's -b (tokens per step)\n"
        "  chunked_prefill: true      # llama-server mixes decode tokens and prompt chunks in one step\n"
        "  prefix_caching: false      # verify sends cache_prompt: false\n"
    )
    return frag
