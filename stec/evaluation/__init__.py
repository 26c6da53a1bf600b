"""Modality-agnostic evaluation of frozen representations.

- :func:`embed`: features of a dataset from a frozen encoder;
- :func:`linear_probe` / :func:`fit_linear_probe`: the linear evaluation protocol
  (standardise, Adam, early stopping on 10% of the training data);
- :func:`cross_validate`: leave-one-fold-out linear evaluation (ESC-50);
- :func:`mean_average_precision`, :func:`knn_accuracy`, :func:`class_distance_ratio`;
- :func:`action_prediction_accuracy`, :func:`probe_actions`: how readable the action is;
- :func:`write_results`, :func:`format_table`: atomic JSON and a text table.
"""

from stec.evaluation.action_probe import action_prediction_accuracy, probe_actions
from stec.evaluation.embed import embed, features_of, frozen_eval
from stec.evaluation.metrics import (
    average_precision_per_class,
    class_distance_ratio,
    knn_accuracy,
    mean_average_precision,
)
from stec.evaluation.probe import (
    LinearProbe,
    cross_validate,
    fit_linear_probe,
    linear_probe,
    validation_split,
)
from stec.evaluation.results import check_results, format_table, write_results

__all__ = [
    "LinearProbe",
    "action_prediction_accuracy",
    "average_precision_per_class",
    "check_results",
    "class_distance_ratio",
    "cross_validate",
    "embed",
    "features_of",
    "fit_linear_probe",
    "format_table",
    "frozen_eval",
    "knn_accuracy",
    "linear_probe",
    "mean_average_precision",
    "probe_actions",
    "validation_split",
    "write_results",
]
