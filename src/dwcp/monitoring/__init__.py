"""Monitoring as code: Prometheus scrape config, alert and recording rules with promtool tests,
Alertmanager routing, Grafana dashboards and provisioning, all rendered from the inventory.

    settings.py     MonitoringSettings, the inventory's `monitoring:` section
    config.py       job names, windows, metric catalog, PromQL helpers
    alerts/         one module per family (services, consensus, ml) + <family>_test.yml beside it
    rules/          recording rules (level:metric:operation) + recording_test.yml
    dashboards/     targets (named queries), panels, one module per dashboard
    prometheus.py alertmanager.py grafana.py   file builders
    render.py       render_all(inventory, out_dir, jobs=...) writes everything
    check.py        run_checks(out_dir) runs promtool/amtool and parses dashboard queries
    sink.py         build_sink_app(data_dir): the local Alertmanager webhook receiver
    cli.py          `dwcp monitoring render|check`
"""

from dwcp.monitoring.settings import MonitoringSettings

__all__ = ["MonitoringSettings"]
