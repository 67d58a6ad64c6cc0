"""The metadata catalog: every dataset, column, test and lineage edge of every location, in
DataHub (Lite under PHLO_HOME by default, a DataHub server in production)."""
