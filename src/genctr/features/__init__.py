"""Feature building (Spark), data-quality suites (GX) and the Feast feature store."""
