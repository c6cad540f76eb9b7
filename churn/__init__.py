"""The logic of every stage (training, serving, monitoring, batch scoring), one module per concern:
the feature schema, settings, the model registry (`model_registry`) and store (`model`), the records
that cross stages, each with its one owner (`predictionlog`, `outcomes`, `reports`), the API's
contract, and each command's work (`fitting`, `retraining`, `decision`, `registry_commands`,
`drift_check`, `performance_check`, `outcome_ingest`, `cleanup`, `batch_scoring`).

It imports no other part of the project. The commands (`python -m training.X`, `monitoring.X`,
`scoring.X`) define only `main` and `parse_options`: their options are parsed into a typed object,
then a call into this package does the work. Serving, monitoring and scoring never reach the
modules only training uses (`fitting`, `retraining`, `decision`, `registry_commands`, `gate`,
`promotion`, `threshold`). Module names, and top-level function, class and constant names (a
command's `main` and `parse_options` aside), are unique across churn/, training/, monitoring/ and
scoring/. tests/unit/test_layout.py holds these rules.
"""

__version__ = "0.1.0"
