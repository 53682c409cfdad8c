"""Panel kinds shared by the dashboards: a time series and a stat, both on the `$datasource` variable."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from dwcp.monitoring.dashboards.targets import Target

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _queries(targets: Sequence[Target]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery().expr(t.expr).legend_format(t.legend).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        for i, t in enumerate(targets)
    ]


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps]
    )


def graph(title: str, targets: Sequence[Target], *, unit: str, description: str, width: int = 12,
          steps: Sequence[tuple[float | None, str]] = ()) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
             .span(width).height(8).fill_opacity(10))
    for q in _queries(targets):
        panel = panel.with_target(q)
    if steps:
        panel = panel.thresholds(_thresholds(steps))
    return panel


def single(title: str, targets: Sequence[Target], *, unit: str, description: str, width: int = 12,
           steps: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
             .span(width).height(6).thresholds(_thresholds(steps)))
    for q in _queries(targets):
        panel = panel.with_target(q)
    return panel


def new_dashboard(title: str, uid: str, *, description: str, job_variable: bool = False) -> dashboard.Dashboard:
    """A dashboard with the datasource variable (and the job variable when asked), 1h window, 30s refresh."""
    dash = (dashboard.Dashboard(title).uid(uid).description(description).tags(["dwcp"]).editable()
            .time("now-1h", "now").refresh("30s").timezone("browser")
            .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")))
    if job_variable:
        dash = dash.with_variable(
            dashboard.QueryVariable("job").label("Job").datasource(DATASOURCE)
            .query("label_values(up, job)").multi(True).include_all(True).all_value(".*")
        )
    return dash
