"""Action spaces: the structured, egocentric, binned efference copy.

An augmenter records, for every view it makes, the parameters of the action it applied in
a :data:`ViewParams` record. An :class:`ActionComponent` turns the records of two views
into the **relative** action that leads from view ``a`` to view ``b`` and bins it; an
:class:`ActionSpace` is an ordered list of components that yields the inverse model's
targets, a mask of the pairs where the action is defined, and how the components weigh in
the loss.

- :mod:`stec.actions.components`: the record format, binning, ``Continuous``,
  ``Categorical``, ``Binary``;
- :mod:`stec.actions.affine`: ``Affine`` and the one affine convention (source -> view);
- :mod:`stec.actions.space`: ``ActionSpace`` and ``ActionTargets``.
"""

from stec.actions.affine import SOURCE_TO_VIEW, Affine, invert_affine, relative_affine
from stec.actions.components import (
    CATEGORICAL_RELATIONS,
    CONTINUOUS_RELATIONS,
    ActionComponent,
    Binary,
    Categorical,
    Continuous,
    ViewParams,
    bin_values,
    check_on_device,
    normalise_values,
)
from stec.actions.space import ActionSpace, ActionTargets

__all__ = [
    "CATEGORICAL_RELATIONS",
    "CONTINUOUS_RELATIONS",
    "SOURCE_TO_VIEW",
    "ActionComponent",
    "ActionSpace",
    "ActionTargets",
    "Affine",
    "Binary",
    "Categorical",
    "Continuous",
    "ViewParams",
    "bin_values",
    "check_on_device",
    "invert_affine",
    "normalise_values",
    "relative_affine",
]
