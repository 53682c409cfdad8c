"""Recording rules: precomputed series named `level:metric:operation` (see recording.py)."""
