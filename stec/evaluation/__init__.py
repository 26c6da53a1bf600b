"""Modality-agnostic evaluation of frozen representations.

- :func:`embed`: features of a dataset from a frozen encoder;
- :func:`linear_probe` / :func:`fit_linear_probe`: linear evaluation, by default an
  L2-regularised logistic regression (L-BFGS, ``C`` by inner cross-validation), or the
  EVAR protocol (Adam, early stopping on 10% of the training data);
- :func:`cross_validate`: leave-one-fold-out linear evaluation (ESC-50);
- :func:`check_two_classes`: the CLIs' refusal to probe labels of one class;
  :func:`labelled_items`: the items a probe can use, and a line naming those without a label;
- :func:`cross_validate_tasks`: the same on several label sets of the same clips;
- :func:`probe_options`: the probe keyword arguments of an ``evaluate:`` config section;
- :func:`mean_average_precision`, :func:`knn_accuracy`, :func:`class_distance_ratio`
  (:func:`distance_ratio_where_defined`: None where it is not);
- :func:`action_prediction_accuracy`, :func:`probe_actions`: how readable the action is;
- :func:`write_results`, :func:`format_table`: atomic JSON and a text table.
"""

from stec.evaluation import sed  # noqa: F401 - sound event detection: frame and event F1
from stec.evaluation.action_probe import action_prediction_accuracy, embed_pairs, probe_actions
from stec.evaluation.dense import dense_probe, embed_maps, segmentation_scores  # noqa: F401
from stec.evaluation.embed import embed, features_of, frozen_eval, placed_on
from stec.evaluation.logreg import DEFAULT_CS
from stec.evaluation.metrics import (
    average_precision_per_class,
    class_distance_ratio,
    distance_ratio_where_defined,
    knn_accuracy,
    mean_average_precision,
)
from stec.evaluation.probe import (
    PROTOCOLS,
    LinearProbe,
    check_two_classes,
    cross_validate,
    fit_linear_probe,
    labelled_items,
    linear_probe,
    probe_options,
)
from stec.evaluation.probe_evar import validation_split
from stec.evaluation.results import check_results, format_table, write_results
from stec.evaluation.tasks import cross_validate_tasks

__all__ = [
    "DEFAULT_CS",
    "PROTOCOLS",
    "LinearProbe",
    "action_prediction_accuracy",
    "average_precision_per_class",
    "check_results",
    "check_two_classes",
    "labelled_items",
    "class_distance_ratio",
    "distance_ratio_where_defined",
    "cross_validate",
    "cross_validate_tasks",
    "embed",
    "embed_pairs",
    "features_of",
    "fit_linear_probe",
    "format_table",
    "frozen_eval",
    "knn_accuracy",
    "linear_probe",
    "mean_average_precision",
    "placed_on",
    "probe_actions",
    "probe_options",
    "validation_split",
    "write_results",
]
