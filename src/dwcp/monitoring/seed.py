"""The seed guide's original alert rules, verbatim, kept only to prove its mistakes in promtool tests.

`seed_test.yml` (beside the alerts) runs these next to our rules on the same input series: the seed's
HighLatency and QuorumNotAchieved stay silent where the corrected ones fire. They are never deployed.
"""

from __future__ import annotations

from typing import Any

SEED_ALERTS: list[dict[str, Any]] = [
    {"alert": "DWCPManagerDown", "expr": 'up{job="dwcp-manager"} == 0', "for": "30s",
     "labels": {"severity": "critical"},
     "annotations": {"summary": "DWCP Manager down on {{ $labels.instance }}"}},
    {"alert": "ConsensusDown", "expr": 'up{job=~".*-consensus"} == 0', "for": "1m",
     "labels": {"severity": "critical"},
     "annotations": {"summary": "Consensus node down: {{ $labels.instance }}"}},
    {"alert": "HighLatency", "expr": "histogram_quantile(0.99, dwcp_request_duration_seconds_bucket) > 0.2",
     "for": "5m", "labels": {"severity": "warning"},
     "annotations": {"summary": "High P99 latency: {{ $value }}s"}},
    {"alert": "QuorumNotAchieved", "expr": "probft_quorum_achieved_total == 0", "for": "5m",
     "labels": {"severity": "critical"},
     "annotations": {"summary": "ProBFT quorum not achieved for 5 minutes"}},
    {"alert": "ModelAccuracyDrop", "expr": "compression_selector_accuracy < 0.95", "for": "1h",
     "labels": {"severity": "warning"},
     "annotations": {"summary": "Compression selector accuracy dropped to {{ $value }}"}},
]


def seed_rule_groups() -> list[dict[str, Any]]:
    # Renamed with a Seed prefix so a test file can load both rule sets without name clashes.
    rules = [{**r, "alert": f"Seed{r['alert']}"} for r in SEED_ALERTS]
    return [{"name": "seed_original_alerts", "rules": rules}]
