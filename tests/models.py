"""Models a test saves into a store of its own: `python -m tests.models unsupported` (with MLOPS_HOME
and BENTOML_HOME set) trains, saves, registers and promotes a pipeline the fast scoring path must
refuse, and prints its tag."""

from __future__ import annotations

import sys

from churn.fitting import DEFAULT_DATA, save_and_register, train
from churn.logs import setup_logging
from churn.promotion import promotion
from churn.settings import settings_or_exit


def unsupported_pipeline(seed: int):
    """The training pipeline without its log1p step: valid, but not a shape churn.fastpath knows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from churn.schema import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    pre = ColumnTransformer(
        [
            ("num", Pipeline([("scale", StandardScaler())]), list(NUMERIC_FEATURES)),
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL_FEATURES)),
        ]
    )
    return Pipeline(
        [("preprocess", pre), ("classifier", LogisticRegression(random_state=seed, max_iter=2000))]
    )


def main(argv: list[str]) -> int:
    if argv != ["unsupported"]:
        print("usage: python -m tests.models unsupported", file=sys.stderr)
        return 2
    settings = settings_or_exit()
    log = setup_logging(settings, "tests").getChild("models")
    result = train(settings, DEFAULT_DATA, 42, log, build=unsupported_pipeline)
    print(save_and_register(settings, result, log, promotion(None, override="always"))["tag"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
