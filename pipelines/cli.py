"""The ``tailor`` command line: the root group (settings, init, up, down, status, demo,
bench chain) and the registration of every command group, each in its stage's ``cli``
module (synth, malls, crawl, validate, train, index, deploy, closet). Every command is a
thin wrapper over the stage functions the Airflow DAGs call. Heavy modules are imported
inside commands so ``tailor --help`` stays fast."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from pipelines.clitools import fail
from pipelines.crawl.cli import bench_crawl_command, crawl_command
from pipelines.deploy.cli import (
    bench_load_command,
    bench_photos_command,
    bench_serve_command,
    deploy_command,
    deploy_rollback_command,
    deploy_status_command,
)
from pipelines.index.cli import (
    bench_index_command,
    index_build_command,
    index_search_command,
    index_update_command,
)
from pipelines.malls.cli import mall_serve_cmd
from pipelines.settings import Settings, get_settings
from pipelines.synth.cli import bench_synth_cmd, synth_baselines_cmd, synth_cmd, synth_preview_cmd
from pipelines.train.cli import models_curves_cmd, models_rollback_cmd, models_status_cmd, models_train_cmd
from pipelines.validate.cli import (
    quality_report,
    validate_import_annotations,
    validate_init,
    validate_run,
)

app = typer.Typer(
    help="Tailor: an MLOps data platform for fashion visual search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _no_usage_data() -> None:
    """Usage data off for whatever this process runs in-process (MLflow, DVC, GX, BentoML)."""
    import os

    from pipelines.services import NO_USAGE_DATA

    os.environ.update(NO_USAGE_DATA)


synth_app = typer.Typer(help="Generate and inspect the synthetic fashion world (the embedded default).")
mall_app = typer.Typer(help="Demo shopping malls served on loopback.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: training, champions, promotion, rollback.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(mall_app, name="mall")
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")
synth_app.callback(invoke_without_command=True)(synth_cmd)
synth_app.command("preview")(synth_preview_cmd)
synth_app.command("baselines")(synth_baselines_cmd)
bench_app.command("synth")(bench_synth_cmd)
mall_app.command("serve")(mall_serve_cmd)
models_app.command("status")(models_status_cmd)
models_app.command("train")(models_train_cmd)
models_app.command("rollback")(models_rollback_cmd)
models_app.command("curves")(models_curves_cmd)
validate_app = typer.Typer(
    help="Great Expectations quality gate, quarantine, splits, balanced manifests.", no_args_is_help=True
)
quality_app = typer.Typer(help="Data-quality reports for data stewards.", no_args_is_help=True)
app.add_typer(validate_app, name="validate")
app.add_typer(quality_app, name="quality")
validate_app.command("run")(validate_run)
validate_app.command("init")(validate_init)
validate_app.command("import-annotations")(validate_import_annotations)
quality_app.command("report")(quality_report)
deploy_app = typer.Typer(help="Build, smoke-test, switch and roll back the search service.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")
deploy_app.command("run")(deploy_command)
deploy_app.command("status")(deploy_status_command)
deploy_app.command("rollback")(deploy_rollback_command)
bench_app.command("serve")(bench_serve_command)
bench_app.command("load")(bench_load_command)
bench_app.command("photos")(bench_photos_command)
index_app = typer.Typer(help="The faiss IVF-PQ product index: build, update, search.", no_args_is_help=True)
app.add_typer(index_app, name="index")
index_app.command("build")(index_build_command)
index_app.command("update")(index_update_command)
index_app.command("search")(index_search_command)
bench_app.command("index")(bench_index_command)


def _plugins() -> None:
    """Command groups and benchmarks other packages register under the ``tailor.cli`` and
    ``tailor.bench`` entry points (pyproject.toml): serving's ``users``, ``closet`` and
    ``bench look`` come in this way, so the pipelines never import serving code."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="tailor.cli"):
        app.add_typer(ep.load(), name=ep.name)
    for ep in entry_points(group="tailor.bench"):
        bench_app.command(ep.name)(ep.load())


_plugins()

# Stage commands whose modules keep heavy imports inside the functions.
app.command("crawl")(crawl_command)
bench_app.command("crawl")(bench_crawl_command)


# --------------------------------------------------------------------------- project
@app.command("settings")
def settings_cmd() -> None:
    """Print the resolved settings (every value can be overridden with TAILOR_<NAME>)."""
    typer.echo(json.dumps(get_settings().model_dump(mode="json"), indent=2))


@app.command("init")
def init_cmd() -> None:
    """Create runtime directories and make sure DVC tracks data/ (idempotent)."""
    from pipelines import versioning

    s = get_settings()
    s.ensure_dirs()
    dvc_file = versioning.ensure_initialised(s)
    typer.echo(f"data tree {s.data_dir} tracked by {dvc_file} (version {versioning.data_hash(s)})")


@app.command("up")
def up_cmd(
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="airflow, mlflow, malls; repeatable")
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help=(
                "the cluster profile: Postgres, Redis, an S3-compatible store, Airflow with the "
                "CeleryExecutor and two workers, MLflow on Postgres + S3 (same as TAILOR_PROFILE=cluster)"
            ),
        ),
    ] = False,
) -> None:
    """Start Airflow and the MLflow server on 127.0.0.1; harmless when running."""
    from pipelines import services

    s = _profile_settings(cluster)
    names = services.expand(service or ["airflow", "mlflow"], s)
    unknown = set(names) - set(services.services(s))
    if unknown:
        fail(f"unknown service(s) {sorted(unknown)}; choose from {sorted(services.services(s))}")
    for name in names:
        typer.echo(f"starting {name} ...")
        try:
            info = services.start(name, s)
        except RuntimeError as exc:
            fail(str(exc))
        where = f" at {info['url']}" if info["url"] else ""
        typer.echo(f"{name}: {'started' if info['started'] else 'already running'}{where} (pid {info['pid']})")
    if not service:  # the recorded current release serves again (after a reboot, a crash)
        from pipelines.deploy import release

        try:
            back = release.ensure_serving(s)
        except (RuntimeError, OSError) as exc:
            fail(f"the current release could not be started again: {exc}")
        if back:
            typer.echo(f"search: brought back release {release.read_state(s)['current']} ({', '.join(back)})")
    typer.echo(services.describe(s))
    if cluster and os.environ.get("TAILOR_PROFILE") != "cluster":
        typer.echo(
            "the cluster profile is up: `export TAILOR_PROFILE=cluster` so that other tailor "
            "commands (demo, models, closet ...) use it too"
        )


def _profile_settings(cluster: bool) -> Settings:
    """The settings, switched to the cluster profile for this process when ``cluster``."""
    if cluster and get_settings().profile != "cluster":
        os.environ["TAILOR_PROFILE"] = "cluster"
        get_settings.cache_clear()
    return get_settings()


@app.command("down")
def down_cmd(
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="default: all")] = None,
) -> None:
    """Stop the services Tailor started, of either profile; harmless when nothing runs."""
    from pipelines import services

    s = get_settings()
    if not service:  # the search service (gateway and both slots) is part of "everything"
        from pipelines.deploy import release

        for name, stopped in release.stop_all(s).items():
            typer.echo(f"{name}: {'stopped' if stopped else 'not running'}")
        for name, stopped in services.stop_everything(s).items():
            typer.echo(f"{name}: {'stopped' if stopped else 'not running'}")
        return
    for name in services.expand(service, s):
        stopped = services.stop(name, s)
        typer.echo(f"{name}: {'stopped' if stopped else 'not running'}")


@app.command("status")
def status_cmd() -> None:
    """Show which services run, their URLs and logs."""
    from pipelines import services

    typer.echo(services.describe())


# --------------------------------------------------------------------------- benchmarks
@bench_app.command("chain")
def bench_chain_cmd(
    out: Annotated[Path, typer.Option(help="working directory for the two project copies and their logs")] = Path(
        "var/bench-chain"
    ),
    products: Annotated[int, typer.Option(help="catalog products of the small world")] = 120,
    scenes: Annotated[int, typer.Option(help="street scenes of the small world")] = 60,
    epochs: Annotated[int, typer.Option(help="epochs per model")] = 1,
) -> None:
    """Time the whole chain (`tailor demo`) on the embedded default and on the cluster profile,
    on the same small world, one after the other; prints both and their ratio."""
    from pipelines.chainbench import bench_chain

    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        fail(f"{out} is not empty: choose another --out or remove it")
    res = bench_chain(out, products, scenes, epochs)
    for profile, r in res.items():
        dags = ", ".join(f"{k} {v}s" for k, v in r["dags"].items())
        typer.echo(f"{profile:9s} exit {r['rc']}  {r['seconds']:.0f} s   ({dags})  log: {r['log']}")
    if all(r["rc"] == 0 for r in res.values()):
        typer.echo(f"cluster / embedded: {res['cluster']['seconds'] / res['embedded']['seconds']:.2f}x")
    else:
        fail("a run failed: see its log")


# --------------------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    seed: Annotated[int, typer.Option(help="seed of the demo world")] = 0,
    products: Annotated[
        int | None, typer.Option(help="catalog products of the world (default: the demo's 480)")
    ] = None,
    scenes: Annotated[int | None, typer.Option(help="street scenes of the world (default: the demo's 200)")] = None,
    chain: Annotated[
        bool, typer.Option(help="run crawl -> validate -> retrain -> index -> deploy through Airflow")
    ] = True,
    skip_services: Annotated[bool, typer.Option(help="only generate the world")] = False,
) -> None:
    """Run the embedded default end to end and print the URLs and a real search result."""
    import time

    import httpx

    from pipelines import demo, services, versioning
    from pipelines.synth.stages import generate_stage, preview_stage
    from pipelines.validate.annotations import import_annotations

    t0 = time.monotonic()
    chain_error = ""
    s = get_settings()
    s.ensure_dirs()
    versioning.ensure_initialised(s)
    world = s.demo_world_dir
    typer.echo(f"[1/5] synthetic world -> {world}")
    generate_stage(seed, products, scenes, world, s)
    typer.echo(f"      contact sheet: {preview_stage(world)}")
    if skip_services:
        return
    typer.echo("[2/5] demo malls, MLflow, Airflow, data-quality report (first Airflow start migrates its DB)")
    for name in services.expand(["malls", "mlflow", "airflow", "report"], s):
        try:
            info = services.start(name, s)
        except RuntimeError as exc:
            fail(str(exc))
        typer.echo(f"      {name}: {'started' if info['started'] else 'already running'} ({info['url']})")
    if chain:
        typer.echo("[3/5] annotation export of the world -> data/imports/demo")
        typer.echo(f"      {import_annotations(world, s.imports_dir / 'demo', s=s)}")
        typer.echo("[4/5] crawl_malls via the Airflow REST API; the Assets carry it through the chain")
        try:
            demo.run_chain(s, say=typer.echo)
            typer.echo(demo.format_result(demo.street_search(world, s)))
            token, token_file = demo.demo_user(s)
            typer.echo(f"      {demo.closet_look(world, token, s)}")
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            # Keep going: whatever runs is still worth showing (Airflow has the details).
            chain_error = str(exc)
            typer.secho(f"      chain stopped: {chain_error}", fg=typer.colors.RED, err=True)
    typer.echo(f"[5/5] ready after {time.monotonic() - t0:.0f}s:")
    typer.echo(services.describe(s))
    typer.echo("Demo malls: " + ", ".join(s.url(s.mall_base_port + i) for i in range(3)))
    typer.echo(f"Data Docs / quality summary: {s.url(s.report_port, '/tailor/index.html')}")
    if chain and not chain_error:
        typer.echo(
            f"Search endpoint: {s.url(s.bento_port, '/search')}  demo page: {s.url(s.bento_port, '/demo')}  "
            f"OpenAPI: {s.url(s.bento_port, '/docs.json')}"
        )
        typer.echo(
            f"Closet API token of user 'demo' (paste it into the demo page): {token}  (also in {token_file}; "
            "more users: `tailor users add NAME`)"
        )
    elif chain:
        # nothing new was deployed: say so rather than print a URL that may not answer
        typer.echo(
            "Search endpoint: not deployed by this run (see 'chain stopped' above; MLflow has the gate's reasons)."
        )
    typer.echo("Stop everything with `make down`.")
    if chain_error:
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
