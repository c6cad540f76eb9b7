"""The logic of every stage (training, serving, monitoring, batch scoring), one module per concern:
the feature schema, settings, the model registry (`model_registry`) and store (`model`), the records
that cross stages (`outcomes`, `predictionlog`), the API's contract, the reports' shapes, and each
command's work (`fitting`, `retraining`, `decision`, `drift_check`, `performance_check`,
`outcome_ingest`, `batch_scoring`, `registry_commands`).

It imports no other part of the project. `python -m training.X`, `monitoring.X` and `scoring.X` are
argument parsing plus one call into this package; serving, monitoring and scoring never reach the
modules only training uses (`fitting`, `retraining`, `decision`, `gate`, `promotion`, `threshold`).
Module names, and top-level function, class and constant names, are unique across churn/,
training/, monitoring/ and scoring/. tests/unit/test_layout.py holds these rules.
"""

__version__ = "0.1.0"
