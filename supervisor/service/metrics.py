"""`/metrics`: Prometheus text format via prometheus-client, built from the store and the
running jobs at each scrape (nothing to keep in step between scrapes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.service.store import ACTIVE, STATES

if TYPE_CHECKING:
    from supervisor.service.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JobsCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        jobs = GaugeMetricFamily("trainsup_jobs", "Jobs by state", labels=["state"])
        counts = d.store.counts()
        for state in STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        labels = ["job", "name"]
        fams = {
            "iteration": GaugeMetricFamily(
                "trainsup_job_iteration", "Last iteration darknet printed", labels=labels
            ),
            "avg_loss": GaugeMetricFamily(
                "trainsup_job_avg_loss", "darknet's running average loss", labels=labels
            ),
            "last_map": GaugeMetricFamily(
                "trainsup_job_last_map", "mAP of the latest evaluation (fraction)", labels=labels
            ),
            "best_map": GaugeMetricFamily(
                "trainsup_job_best_map", "Best mAP so far (fraction)", labels=labels
            ),
            "rate": GaugeMetricFamily(
                "trainsup_job_iterations_per_second", "Training speed", labels=labels
            ),
        }
        fams["log_age"] = GaugeMetricFamily(
            "trainsup_job_output_age_seconds",
            "Seconds since darknet last wrote to its log (a hung training grows this)",
            labels=labels,
        )
        relaunches = CounterMetricFamily(
            "trainsup_job_relaunches", "darknet relaunches of the job", labels=labels
        )
        for row in d.store.jobs(ACTIVE):
            key = [str(row["id"]), row["name"]]
            for col in ("iteration", "avg_loss", "last_map", "best_map"):
                if row[col] is not None:
                    fams[col].add_metric(key, float(row[col]))
            r = d.running.get(row["id"])
            if r is not None and r.progress is not None and r.progress.iterations_per_s:
                fams["rate"].add_metric(key, r.progress.iterations_per_s)
            relaunches.add_metric(key, float(row["relaunches"]))
            age = d.output_age(row)
            if age is not None:
                fams["log_age"].add_metric(key, age)
        yield from fams.values()
        yield relaunches
        ready = GaugeMetricFamily("trainsup_ready", "1 once re-adoption is done")
        ready.add_metric([], 1.0 if d.ready else 0.0)
        yield ready


def render(daemon: Daemon) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobsCollector(daemon))
    return generate_latest(registry)
