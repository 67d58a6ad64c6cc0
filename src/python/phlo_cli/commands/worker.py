"""`phlo worker start|list`: Celery workers for the steps of runs Dagster launches."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from phlo_cli.common import EXIT_FAILED, UsageError, command_settings, err

worker_app = App(
    name="worker",
    help="Celery workers that execute the steps of runs Dagster launches (PHLO_EXECUTOR=celery).",
)


@worker_app.command(name="start")
def worker_start(*, concurrency: int = 1, name: str | None = None) -> int:
    """Run a worker here until stopped (Ctrl-C): it takes steps from the broker
    (PHLO_CELERY_BROKER_URL) and runs them with this machine's settings, which must reach the
    same lake catalog, bucket and Dagster storage as the runs'. Start as many as you like, here
    or on other machines; `phlo services up --with workers` starts a broker.

    Parameters
    ----------
    concurrency
        Steps this worker runs at once (processes; default 1).
    name
        The worker's name on the broker (default phlo-PID@HOST).
    """
    from phlo_core.runs.workers import WorkerError, start_worker

    if concurrency < 1:
        raise UsageError(f"--concurrency must be 1 or more, not {concurrency}")
    settings = command_settings()
    try:
        start_worker(settings, concurrency=concurrency, name=name)
    except WorkerError as exc:
        err(str(exc))
        return EXIT_FAILED
    return 0


@worker_app.command(name="list")
def worker_list(*, as_json: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """The workers that answer on the broker and the steps each runs now.

    Parameters
    ----------
    as_json
        A JSON list of {name, active}.
    """
    import json
    from dataclasses import asdict

    from phlo_cli.render import to_table
    from phlo_core.runs.workers import WorkerError, list_workers

    try:
        workers = list_workers(command_settings(writes=False))
    except WorkerError as exc:
        err(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps([asdict(worker) for worker in workers]))
    elif workers:
        print(to_table(["worker", "steps running"], [(w.name, w.active) for w in workers]))
    else:
        print("no worker answers on the broker: `phlo worker start` starts one")
    return 0
