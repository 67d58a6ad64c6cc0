"""Celery workers for the steps of runs Dagster launches (`phlo worker start`), on any machine
that reaches the broker (PHLO_CELERY_BROKER_URL), the lake's catalog, its bucket and Dagster's
storage. A worker takes dagster-celery's `execute_plan` tasks: each loads the step's code
location by the module the run names, opens the run's instance from the task and records the
step's events there; its resources read this machine's settings (its environment, `.env`,
PHLO_HOME/services.env).

The worker runs in this process (Celery's `worker_main`, prefork pool): no `celery` program on
PATH and no configuration file with the broker's password (dagster-celery's own `worker start`
shells out to `celery` and writes the password into a file under DAGSTER_HOME that any local
user may read).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phlo_core.runs.executor import celery_app_args
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from celery import Celery  # pants: no-infer-dep


class WorkerError(RuntimeError):
    """The workers' broker cannot be used; one line, its password not in it."""


def worker_app(settings: PhloSettings) -> Celery:
    """The Celery app the runs submit steps to, with dagster-celery's step task registered."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    if settings.phlo_celery_broker_url is None:
        raise WorkerError(
            "PHLO_CELERY_BROKER_URL is not set: `phlo services up --with workers` starts a "
            "broker and sets it, or set it to a Redis of your own"
        )
    executor = CeleryExecutor(retries=RetryMode.DISABLED, **celery_app_args(settings))
    app = make_app(executor.app_args())
    create_task(app)
    return app


def node_name(name: str | None) -> str:
    """A worker's name on the broker: NAME@HOST (phlo-PID@HOST by default)."""
    name = name or f"phlo-{os.getpid()}"
    return name if "@" in name else f"{name}@{socket.gethostname()}"


def start_worker(settings: PhloSettings, *, concurrency: int, name: str | None) -> None:
    """Run a worker until it is stopped (Ctrl-C, SIGTERM: the steps it runs finish first)."""
    app = worker_app(settings)
    check_broker(app)
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--prefetch-multiplier=1",
            "--queues=dagster",
            f"--hostname={node_name(name)}",
            "--without-mingle",
            "--without-gossip",
        ]
    )


def check_broker(app: Celery) -> None:
    """Connect once, so that a broker down or a wrong password is one line, not Celery's
    endless reconnecting."""
    from phlo_core.redact import redact

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises the transport's own errors
        raise WorkerError(f"cannot reach the workers' broker: {redact(str(exc))}") from None


@dataclass
class Worker:
    name: str
    active: int  # steps running on it now


def list_workers(settings: PhloSettings, timeout: float = 2.0) -> list[Worker]:
    """The workers that answer on the broker, with how many steps each runs now."""
    app = worker_app(settings)
    check_broker(app)
    inspector = app.control.inspect(timeout=timeout)
    active = inspector.active() or {}
    return [Worker(name, len(tasks or [])) for name, tasks in sorted(active.items())]
