"""Where the steps of a run Dagster launches (the UI, a schedule, the daemon's backfills) execute,
chosen by the run's settings when it starts, not when the definitions load:

- PHLO_EXECUTOR=in_process (default): in the run's own process, as `phlo materialize` runs them
  (the multiprocess executor re-imports everything per step: 8-11 s a run here);
- PHLO_EXECUTOR=celery: each step a task on the Celery workers `phlo worker start` runs, here
  or on other machines (dagster-celery's executor, broker PHLO_CELERY_BROKER_URL, which also
  keeps the tasks' results). A worker that dies while it runs a step (its machine gone, killed)
  cannot report it: the run would wait for that step forever. The run asks a silent worker
  whether it is still there and fails the step when it stops answering (WorkerLost below), so
  the run ends failed and `phlo backfill --resume` can finish it.

Step outputs (`step_outputs`) go to the lake's S3 bucket on the production profile, beside the
lake's own prefix, so that a step on another machine reads what one here wrote; to Dagster's
usual folder under DAGSTER_HOME otherwise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dagster import Executor, InitExecutorContext, IOManager, executor
from dagster._core.execution.retries import RetryMode

from phlo_core.resources import SettingsResource
from phlo_core.settings import PhloSettings

if TYPE_CHECKING:
    from celery import Celery  # pants: no-infer-dep
    from celery.result import AsyncResult  # pants: no-infer-dep

# How often a step's silent worker is asked whether it is there, and how many unanswered asks
# make it lost (a worker answers from its main process while a pool process runs the step).
_ASK_EVERY_SECONDS = 10.0
_ASKS = 3
STEP_OUTPUTS_FOLDER = "dagster-steps"


def celery_app_args(settings: PhloSettings) -> dict[str, Any]:
    """What the run's side and the workers' build their Celery app with (they must agree), on
    top of dagster-celery's defaults (queue `dagster`, prefetch 1, priority 5)."""
    assert settings.phlo_celery_broker_url is not None
    url = settings.phlo_celery_broker_url.get_secret_value()
    return {
        "broker": url,
        "backend": url,
        "config_source": {
            # A started task says so (with its worker's name): the run can ask that worker.
            "task_track_started": True,
            # A step's log lines go to the worker's log once (Celery would log them again as
            # warnings, taking stdout and stderr for its own).
            "worker_redirect_stdouts": False,
            # A worker takes a step only when it has a free process: a busy worker does not
            # hold back the next step (it reserves one ahead otherwise) while another is idle.
            "worker_disable_prefetch": True,
            "result_expires": 7 * 24 * 3600,
            "broker_connection_retry_on_startup": True,
            "broker_transport_options": {"visibility_timeout": 24 * 3600},
        },
    }


def _submit(
    app: Celery, plan_context: Any, step: Any, queue: str, priority: int, known_state: Any
) -> Watched:
    """A step as dagster-celery's `execute_plan` task (what its executor sends), the task
    registered once per app (dagster-celery registers it again for every step, and Celery
    warns each time), its result watched."""
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import pack_value
    from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
    from dagster_celery.tasks import create_task

    task = app.tasks.get(TASK_EXECUTE_PLAN_NAME) or create_task(app)
    job = plan_context.reconstructable_job
    args = ExecuteStepArgs(
        job_origin=job.get_python_origin(),
        run_id=plan_context.dagster_run.run_id,
        step_keys_to_execute=[step.key],
        instance_ref=plan_context.instance.get_ref(),
        retry_mode=plan_context.executor.retries.for_inner_plan(),
        known_state=known_state,
        print_serialized_events=True,
    )
    signature = task.si(  # pyright: ignore[reportFunctionMemberAccess]
        execute_step_args_packed=pack_value(args), executable_dict=job.to_dict()
    )
    result = signature.apply_async(
        priority=priority, queue=queue, routing_key=f"{queue}.{TASK_EXECUTE_PLAN_NAME}"
    )
    return Watched(result, app)


def _celery_executor(settings: PhloSettings) -> Executor:
    from dagster_celery.core_execution_loop import core_celery_execution_loop
    from dagster_celery.executor import CeleryExecutor

    class WatchedCeleryExecutor(CeleryExecutor):
        def execute(self, plan_context: Any, execution_plan: Any) -> Any:
            return core_celery_execution_loop(
                plan_context, execution_plan, step_execution_fn=_submit
            )

    # Retries as Dagster's executors have them (op retry policies).
    return WatchedCeleryExecutor(retries=RetryMode.ENABLED, **celery_app_args(settings))


class WorkerLostError(RuntimeError):
    """The worker that ran a step stopped answering."""


class Watched:
    """A step's Celery result, ready (failed) as well when the worker running it is gone."""

    def __init__(self, result: AsyncResult, app: Celery) -> None:
        self.result, self.app = result, app
        self.asked, self.unanswered = time.monotonic(), 0
        self.lost: str | None = None

    def ready(self) -> bool:
        if self.result.ready():
            return True
        if time.monotonic() - self.asked < _ASK_EVERY_SECONDS:
            return False
        self.asked = time.monotonic()
        info = self.result.info if self.result.state == "STARTED" else None
        worker = info.get("hostname") if isinstance(info, dict) else None
        if not worker:
            return False  # waiting in the queue for a worker: that may take long
        if self.app.control.ping(destination=[worker], timeout=2.0):
            self.unanswered = 0
            return False
        self.unanswered += 1
        if self.unanswered < _ASKS:
            return False
        self.lost = worker
        return True

    def get(self) -> Any:
        if self.lost is not None:
            raise WorkerLostError(
                f"the Celery worker {self.lost} running this step stopped answering "
                f"({_ASKS} asks over {_ASKS * _ASK_EVERY_SECONDS:.0f} s): it died or lost "
                "its machine; the step did not finish"
            )
        return self.result.get()

    def revoke(self) -> None:
        self.result.revoke(terminate=True)


@executor(name="phlo", requirements=[])
def phlo_executor(init_context: InitExecutorContext) -> Executor:
    """In the run's process, or on Celery workers, as the run's settings say (PHLO_EXECUTOR)."""
    from dagster._core.executor.in_process import InProcessExecutor

    settings = SettingsResource().settings
    if settings.phlo_executor == "celery":
        return _celery_executor(settings)
    return InProcessExecutor(retries=RetryMode.ENABLED, marker_to_close=None)


class StepOutputs(SettingsResource, IOManager):
    """Dagster's IO manager for step outputs, configured from the run's settings: pickles in
    the lake's bucket (s3://BUCKET/<the lake's prefix's parent>/dagster-steps/) when the lake is
    on S3, so a step on another machine finds its inputs; under DAGSTER_HOME/storage otherwise.
    Outside the lake's own prefix: the lake's maintenance deletes files its catalog does not
    know."""

    def _manager(self) -> IOManager:
        settings = self.settings
        if not settings.lake_on_s3:
            from dagster import PickledObjectFilesystemIOManager

            return PickledObjectFilesystemIOManager(
                base_dir=str(settings.resolved_dagster_home / "storage")
            )
        from dagster_aws.s3 import PickledObjectS3IOManager

        bucket, _, prefix = settings.lake_data_path.removeprefix("s3://").partition("/")
        parent = prefix.rstrip("/").rpartition("/")[0]
        where = f"{parent}/{STEP_OUTPUTS_FOLDER}" if parent else STEP_OUTPUTS_FOLDER
        return PickledObjectS3IOManager(bucket, s3_client(settings), s3_prefix=where)

    def handle_output(self, context: Any, obj: Any) -> None:
        self._manager().handle_output(context, obj)

    def load_input(self, context: Any) -> Any:
        return self._manager().load_input(context)


# One object in every location's definitions (it keeps no settings of its own), so that
# definitions merge as Dagster merges them (different objects under one key are refused).
STEP_OUTPUTS = StepOutputs()


def s3_client(settings: PhloSettings) -> Any:
    """A boto3 S3 client for the lake's object store, from the settings."""
    import boto3
    from botocore.config import Config  # pants: no-infer-dep (boto3's)

    host, tls = settings.s3_endpoint
    secret = settings.phlo_s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=f"{'https' if tls else 'http'}://{host}" if host else None,
        aws_access_key_id=settings.phlo_s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        region_name=settings.phlo_s3_region,
        config=Config(
            s3={"addressing_style": "path" if settings.phlo_s3_url_style == "path" else "virtual"}
        ),
    )
