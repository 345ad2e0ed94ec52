"""The Celery application shared by the API (to publish) and the workers (to consume)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from desbordante_service.settings import Settings, get_settings

JOB_NAME = "desbordante.profile"


def build_celery(settings: Settings) -> Celery:
    app = Celery("desbordante_service", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={"confirm_publish": True},
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.TASK_QUEUE,
        # At-least-once delivery; the service makes repeated runs harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Events so that Flower sees every task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_time_limit=settings.TASK_TIME_LIMIT_SECONDS,
        task_soft_time_limit=settings.soft_time_limit,
        worker_concurrency=settings.WORKER_CONCURRENCY,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        imports=["desbordante_service.worker.jobs"],
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return build_celery(get_settings())


def publish(task_id, time_limit: int) -> None:
    """Enqueue a profiling task; the Celery task id is the profiling task id."""
    # Keep the soft limit below the hard one: with a soft limit above it (the app default),
    # billiard did not enforce a 1 s hard limit.
    soft = min(get_settings().soft_time_limit, time_limit * 0.9)
    get_celery().send_task(
        JOB_NAME,
        args=[str(task_id)],
        task_id=str(task_id),
        time_limit=time_limit,
        soft_time_limit=soft,
    )
