"""Compression selector: picks the codec and level that minimise a payload's WAN transfer time.

Other packages use the service (`service.build_app`), its settings and load profile; everything else
(cost model, features, model, oracle) is internal to this package.
"""
