"""Canary monitoring: the A/B log schema, uplift statistics, SRM, drift reports, the decision."""
