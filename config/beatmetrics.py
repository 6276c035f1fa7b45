"""Platform-wide gauges read at scrape time, served by beat: one process, so no double count.

- `hallmark_rotation_lag_seconds{kind}`: how far the most overdue tenant's active authority
  is past its activation point (0: none is), as the tenants' last rotations left them;
- `hallmark_bundle_sequence_age_seconds`: since the least recently changed tenant bundle got
  its sequence (rotation changes every bundle well within one CA lifetime);
- `hallmark_rotation_tenants_reported`: tenants those two figures cover (compare with the
  tenant count: a sweep that skips tenants shows here);
- `hallmark_celery_queue_depth{queue}`: messages waiting in each queue the workers consume
  (all priority levels), from the broker itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kombu.exceptions import ChannelError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


class PlatformCollector(Collector):
    """Reads the rotation figures from Redis and the queue depths from the Celery broker."""

    def __init__(
        self,
        app: Any,
        *,
        queues: Sequence[str] | None = None,
        redis_client: Callable[[], Any] | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._app = app
        self._queues = queues
        self._redis_client = redis_client
        self._clock = clock

    def queue_names(self) -> list[str]:
        if self._queues is not None:
            return list(self._queues)
        # The configured ones: the default queue and any declared in task_queues.
        names = {self._app.conf.task_default_queue}
        names.update(queue.name for queue in self._app.conf.task_queues or ())
        return sorted(names)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self._rotation()
        except Exception:
            log.exception("reading the rotation figures from Redis failed; this scrape has none")
        try:
            yield self._queue_depths()
        except Exception:
            log.exception("reading the Celery queue depths failed; this scrape has none")

    def _rotation(self) -> Iterator[GaugeMetricFamily]:
        from tenants.events import shared_redis
        from trustdomains import rotationhealth

        client = self._redis_client() if self._redis_client is not None else shared_redis()
        figures = rotationhealth.figures(client, self._clock())
        lag = GaugeMetricFamily(
            "hallmark_rotation_lag_seconds",
            "Seconds the most overdue active authority of any tenant is past its activation "
            "point (0: none is overdue), by kind (x509, jwt), from each tenant's last rotation.",
            labels=["kind"],
        )
        for kind, seconds in figures.rotation_lag.items():
            if seconds is not None:
                lag.add_metric([kind], seconds)
        yield lag
        if figures.bundle_sequence_age is not None:
            yield GaugeMetricFamily(
                "hallmark_bundle_sequence_age_seconds",
                "Seconds since the least recently changed tenant bundle got a new sequence.",
                value=figures.bundle_sequence_age,
            )
        yield GaugeMetricFamily(
            "hallmark_rotation_tenants_reported",
            "Tenants whose last rotation reported the rotation lag and bundle age figures.",
            value=figures.tenants,
        )

    def _queue_depths(self) -> GaugeMetricFamily:
        depth = GaugeMetricFamily(
            "hallmark_celery_queue_depth",
            "Messages waiting in a Celery queue (every priority level), by queue name.",
            labels=["queue"],
        )
        for name, waiting in queue_depths(self._app, self.queue_names()).items():
            depth.add_metric([name], waiting)
        return depth


def queue_depths(app: Any, names: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each named Celery queue, every priority level, from the broker."""
    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in names:
            try:
                depths[name] = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:  # Redis deletes an emptied queue's lists: none waiting
                depths[name] = 0
    return depths
