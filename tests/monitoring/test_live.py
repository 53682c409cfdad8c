"""Which metrics a query reads: the live check relies on it to tell empty panels from unbuilt services."""

from __future__ import annotations

import pytest

from dwcp.monitoring.live import metric_names, selectors


@pytest.mark.parametrize(("expr", "names"), [
    ("histogram_quantile(0.99, sum by (job, le) (rate(x_seconds_bucket{job=~\"a|b\", le!=\"1\"}[5m])))",
     {"x_seconds_bucket"}),
    ('sum by (job) (rate(a_total{kind="server"}[5m])) / sum by (job) (rate(b_total[5m]))\nor\n'
     "0 * sum by (job) (rate(b_total[5m]))", {"a_total", "b_total"}),
    ("increase(x[5m]) == 0 and on (job, instance) increase(y[5m]) > bool 0", {"x", "y"}),
    ("up{job=\"dwcp-manager\"} == 0", {"up"}),
    ("absent(up{job=\"a\"})\nor\nabsent(up{job=\"b\"})", {"up"}),
    ("job:tpbft_consensus_latency_seconds:p99_rate5m > 0.06", {"job:tpbft_consensus_latency_seconds:p99_rate5m"}),
])
def test_metric_names_skip_functions_labels_and_keywords(expr, names):
    assert metric_names(expr) == names


def test_selectors_keep_their_matchers_once():
    expr = ('sum by (job) (rate(a_total{job=~".*", kind="server"}[5m])) / sum by (job) (rate(b_total{job=~".*"}[5m]))'
            '\nor\n0 * sum by (job) (rate(b_total{job=~".*"}[5m]))')
    assert selectors(expr) == ['a_total{job=~".*", kind="server"}', 'b_total{job=~".*"}']
    assert selectors('sum by (job) (up{job=~"tpbft-consensus"})') == ['up{job=~"tpbft-consensus"}']
