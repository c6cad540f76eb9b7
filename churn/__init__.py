"""Code shared by the stages (training, serving, monitoring, batch scoring): the feature schema,
settings, the model registry (`model_registry`) and store (`model`), the records that cross stages
(`outcomes`, `predictionlog`), the API's contract and the reports' shapes.

It imports no other part of the project, and serving imports nothing of training. Module names,
and top-level function, class and constant names, are unique across churn/, training/,
monitoring/ and scoring/ (tests/unit/test_layout.py): `churn.outcomes` is the outcome store,
`monitoring.feedback` the command that fills it; `churn.cleanup` the retention rules,
`monitoring.retention` the command that applies them.
"""

__version__ = "0.1.0"
