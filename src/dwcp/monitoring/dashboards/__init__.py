"""Grafana dashboards as code: targets (named queries), panels (kinds), one module per dashboard.

`render_dashboards` returns file name -> JSON text; the uid is `dwcp-<module name>`, so links stay
stable across renders.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dwcp.monitoring.dashboards import consensus, ml, overview

DASHBOARDS = {"overview": overview, "consensus": consensus, "ml": ml}


def render_dashboards() -> dict[str, str]:
    out = {}
    for name, module in DASHBOARDS.items():
        uid = f"dwcp-{name}"
        built = module.build(uid).build()
        out[f"{uid}.json"] = json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    return out
