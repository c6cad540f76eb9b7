"""Reading models from the BentoML model store: the one place that knows how a model is stored.

The store is opened at MODEL_STORE (default `$BENTOML_HOME/models`) from the settings, explicitly,
so that a process whose BentoML was configured before the settings were read still reads the
volume's store, and each server can have a BENTOML_HOME of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.explain import ExplainRefused, LinearReasons
from churn.fastpath import FastScorer, verified_fast_scorer
from churn.model_registry import current_tag
from churn.schema import EXAMPLE_RECORD, FEATURE_NAMES, records_to_frame
from churn.settings import Settings

if TYPE_CHECKING:
    import bentoml

MODULE = "bentoml.sklearn"
REFERENCE_KEY = "drift_reference"
CALIBRATION_KEY = "calibration"
# Which customers a version was fitted on: sorted 64-bit keyed hashes of their customerIDs (8 bytes
# a customer: 45 KB for the data set's 5,634 training rows), so that no comparison judges a version
# on customers it learned (issue 20.4).
MEMBERSHIP_KEY = "training_members"


class ModelUnavailable(RuntimeError):
    """No usable model: the message is the reason the startup probe reports."""


@dataclass(frozen=True, eq=False)  # compared by identity: a reload makes a new object
class LoadedModel:
    tag: str
    pipeline: Any
    threshold: float
    metadata: dict[str, Any]
    fast: FastScorer | None = None
    # Exact per-feature reasons (churn/explain.py), for a model the fast path verified; else why not.
    reasons: LinearReasons | None = None
    reasons_refusal: str | None = None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(frame[list(FEATURE_NAMES)])[:, 1]

    def predict_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Churn probabilities of validated records: the verified fast path, else the pipeline."""
        if self.fast is not None:
            return self.fast.predict_records(records)
        return self.predict_proba(records_to_frame(records))

    def scored(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and labels against this version's threshold: what the server answers with,
        and what the prediction-log writer records for a shadow candidate."""
        proba = self.predict_records(records)
        return proba, proba >= self.threshold

    @property
    def scoring(self) -> str:
        """Which path scores requests: "fast" (verified lean scorer) or "pipeline"."""
        return "fast" if self.fast is not None else "pipeline"

    def describe(self) -> dict[str, Any]:
        md = self.metadata
        return {
            "model": self.tag,
            "threshold": self.threshold,
            "scoring": self.scoring,
            "metrics": md.get("metrics", {}),
            "trained_at": md.get("trained_at"),
            "algorithm": md.get("algorithm"),
            "data": md.get("data", {}),
        }


def warm_imports() -> None:
    """Import what unpickling a model needs, so that a server started before its first model
    switches to it in about a second rather than importing scikit-learn then."""
    import bentoml.sklearn  # noqa: F401
    import sklearn.compose  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401


def model_store(settings: Settings):
    from bentoml._internal.models import ModelStore  # the store class BentoML's own API wraps

    return ModelStore(str(settings.model_store_path))


def save_to_store(settings: Settings, name: str, pipeline: Any, **options: Any) -> bentoml.Model:
    """bentoml.sklearn.save_model into MODEL_STORE. BentoML's save functions take no store argument
    and write to its default one, `$BENTOML_HOME/models`, which in the manifests is each pod's own
    /tmp: the default is pointed at MODEL_STORE for the call."""
    import bentoml.sklearn
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.model_store.set(model_store(settings))
    try:
        return bentoml.sklearn.save_model(name, pipeline, **options)
    finally:
        BentoMLContainer.model_store.reset()


def get_store_model(settings: Settings, tag: str) -> bentoml.Model:
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return bentoml.models.get(tag, _model_store=model_store(settings))
    except BentoMLException as exc:
        raise ModelUnavailable(f"model {tag} not found in the store: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"model {tag} unreadable in the store: {exc}") from None


def tag_in_store(settings: Settings, tag: str) -> bool:
    try:
        get_store_model(settings, tag)
    except ModelUnavailable:
        return False
    return True


def list_store_models(settings: Settings) -> list[bentoml.Model]:
    return sorted(model_store(settings).list(settings.model_name), key=lambda m: m.info.creation_time)


def load_model(settings: Settings, tag: str) -> LoadedModel:
    """Load and smoke-test a model; any failure is a ModelUnavailable with the reason."""
    import bentoml

    bento_model = get_store_model(settings, tag)
    if bento_model.info.module != MODULE:
        raise ModelUnavailable(f"model {tag} was saved by {bento_model.info.module}, not {MODULE}")
    try:
        pipeline = bentoml.sklearn.load_model(bento_model)
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise ModelUnavailable(
            f"model {tag} files missing or unreadable: {type(exc).__name__}: {exc}"
        ) from None
    metadata = dict(bento_model.info.metadata)
    try:
        threshold = float(metadata["threshold"])
        proba = pipeline.predict_proba(records_to_frame([EXAMPLE_RECORD]))[:, 1]
    except Exception as exc:
        raise ModelUnavailable(f"model {tag} fails its smoke test: {type(exc).__name__}: {exc}") from None
    if not (proba.shape == (1,) and 0.0 <= float(proba[0]) <= 1.0):
        raise ModelUnavailable(f"model {tag} fails its smoke test: probability {proba!r} out of [0, 1]")
    fast, reasons, refusal = _verified_fast_paths(bento_model, pipeline)
    return LoadedModel(
        tag=str(bento_model.tag),
        pipeline=pipeline,
        threshold=threshold,
        metadata=metadata,
        fast=fast,
        reasons=reasons,
        reasons_refusal=refusal,
    )


def _verified_fast_paths(bento_model, pipeline) -> tuple[FastScorer | None, LinearReasons | None, str | None]:
    """The lean path, only if it reproduces the pipeline on the model's own reference sample; and
    its reasons, only if they add up to the pipeline's logit there. Else None and why not."""
    try:
        reference = bento_model.custom_objects[REFERENCE_KEY]
    except Exception:
        return None, None, "no readable reference sample stored with the model to verify against"
    sample = reference.head(2000)
    expected = pipeline.predict_proba(sample[list(FEATURE_NAMES)])[:, 1]
    fast, why = verified_fast_scorer(pipeline, sample.to_dict(orient="records"), expected)
    if fast is None:
        return None, None, why
    try:
        return fast, LinearReasons.for_pipeline(pipeline, reference, fast), None
    except ExplainRefused as exc:
        return fast, None, str(exc)


def load_current_model(settings: Settings) -> LoadedModel:
    tag = current_tag(settings.registry_path, settings.model_name)
    if tag is None:
        raise ModelUnavailable(f"no current model in the registry {settings.registry_path}")
    return load_model(settings, tag)


def load_reference(settings: Settings, tag: str) -> pd.DataFrame:
    """The training sample stored with a model version: what drift detection compares against."""
    bento_model = get_store_model(settings, tag)
    try:
        frame = bento_model.custom_objects[REFERENCE_KEY]
    except KeyError:
        raise ModelUnavailable(f"model {tag} has no stored drift reference") from None
    except Exception as exc:
        raise ModelUnavailable(f"model {tag}: drift reference unreadable: {exc}") from None
    return frame


def load_calibration(settings: Settings, tag: str) -> pd.DataFrame | None:
    """The out-of-fold probabilities and outcomes of a version's training rows (columns
    churn_probability, churn): what calibrates its performance estimates. None for versions
    trained before they were saved, or unreadable."""
    try:
        frame = get_store_model(settings, tag).custom_objects[CALIBRATION_KEY]
    except (ModelUnavailable, KeyError):
        return None
    except Exception:  # a damaged custom object: estimates fall back to raw probabilities
        return None
    return frame


def customer_hashes(ids) -> np.ndarray:
    """Sorted, distinct 64-bit hashes of customer IDs (blake2b): a version's training membership,
    compact. A collision (one in 2^64 per pair) could only leave out one customer too many."""
    return np.unique(_hash64(list(ids)))


def _hash64(ids: list) -> np.ndarray:
    import hashlib

    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def load_membership(settings: Settings, tag: str) -> np.ndarray | None:
    """The customers `tag` was fitted on (customer_hashes), or None for versions trained before
    membership was recorded (or unreadable: then nothing can be left out, and reports say so)."""
    try:
        members = get_store_model(settings, tag).custom_objects[MEMBERSHIP_KEY]
    except (ModelUnavailable, KeyError):
        return None
    except Exception:
        return None
    return np.asarray(members, dtype=np.uint64)


def trained_on(members: np.ndarray | None, ids) -> np.ndarray:
    """For each customer ID, whether `members` holds it (all False when membership is unknown)."""
    ids = list(ids)
    if members is None or not len(members) or not ids:
        return np.zeros(len(ids), dtype=bool)
    return np.isin(_hash64(ids), members)
