"""alertmanager.yml: the seed's routes (critical -> pagerduty-critical, warning -> ops-team) plus the
local webhook sink, with every secret referenced by file and never inlined.

With `local_sink` on, the first child route sends every alert to the sink and `continue: true` lets
the same alert go on to the seed's routes, so a deployment that pages still pages while the sink keeps
a local copy. Integrations whose secret or relay is not configured are left out: the receiver still
exists (routing stays testable with amtool) but notifies nobody.
"""

from __future__ import annotations

from typing import Any

from dwcp.monitoring.settings import MonitoringSettings

SINK_RECEIVER = "local-sink"
SINK_MAX_ALERTS = 500  # per notification, so a post stays far under the sink's body cap
# A down target makes every other alert about it noise; a hard accuracy drop supersedes the drift alert.
INHIBIT_RULES: list[dict[str, Any]] = [
    {"source_matchers": ['alertname=~"DWCPManagerDown|ServiceDown|ConsensusDown"'],
     "target_matchers": ['severity="warning"'], "equal": ["instance"]},
    {"source_matchers": ['alertname="ConsensusQuorumLost"'],
     "target_matchers": ['alertname=~"ConsensusStalled|QuorumNotAchieved|ConsensusDown"'], "equal": ["job"]},
    {"source_matchers": ['alertname="ModelAccuracyDrop"'],
     "target_matchers": ['alertname="ModelAccuracyBelowBaseline"'], "equal": ["job", "instance"]},
]


def alertmanager_config(s: MonitoringSettings) -> dict[str, Any]:
    glob: dict[str, Any] = {"resolve_timeout": s.resolve_timeout}
    if s.smtp_smarthost:
        glob |= {"smtp_smarthost": s.smtp_smarthost, "smtp_from": s.smtp_from,
                 "smtp_require_tls": s.smtp_require_tls}
        if s.smtp_auth_username:
            glob["smtp_auth_username"] = s.smtp_auth_username
        if s.smtp_auth_password_file:
            glob["smtp_auth_password_file"] = s.smtp_auth_password_file

    ops: dict[str, Any] = {"name": "ops-team"}
    if s.smtp_smarthost:
        ops["email_configs"] = [{"to": s.email_to, "send_resolved": True}]
    if s.slack_api_url_file:
        ops["slack_configs"] = [{"api_url_file": s.slack_api_url_file, "channel": s.slack_channel,
                                 "send_resolved": True}]
    pager: dict[str, Any] = {"name": "pagerduty-critical"}
    if s.pagerduty_service_key_file:
        pager["pagerduty_configs"] = [{"service_key_file": s.pagerduty_service_key_file}]
    receivers = [ops, pager]

    routes: list[dict[str, Any]] = []
    if s.local_sink:
        routes.append({"receiver": SINK_RECEIVER, "matchers": ['alertname=~".+"'], "continue": True})
        webhook: dict[str, Any] = {"url": s.sink_url, "send_resolved": True, "max_alerts": SINK_MAX_ALERTS}
        if s.sink_token_file:  # the sink refuses posts without it; the token stays in its file
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": s.sink_token_file}}
        receivers.append({"name": SINK_RECEIVER, "webhook_configs": [webhook]})
    routes += [
        {"receiver": "pagerduty-critical", "matchers": ['severity="critical"']},
        {"receiver": "ops-team", "matchers": ['severity="warning"']},
    ]
    if s.local_sink:
        # Once the sink route has matched, Alertmanager no longer falls back to the root receiver.
        routes.append({"receiver": "ops-team"})
    return {
        "global": glob,
        "route": {
            "receiver": "ops-team",
            "group_by": ["alertname", "job"],
            "group_wait": s.group_wait,
            "group_interval": s.group_interval,
            "repeat_interval": s.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": INHIBIT_RULES,
        "receivers": receivers,
    }
