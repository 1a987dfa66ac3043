"""Semantic types of q2-aam.

Semantic type names are global across every installed QIIME 2 plugin (a duplicate name stops every `qiime`
command), so all of ours carry the ``AAM`` prefix: ``Regressor`` and ``Classifier`` belong to
q2-sample-classifier, whose prediction types (``SampleData[RegressorPredictions]`` ...) we reuse instead of
defining our own.
"""
from qiime2.plugin import SemanticType
from q2_types.feature_data import FeatureData

#: A trained AAM model; the field says what it was trained for.
AAMModel = SemanticType("AAMModel", field_names="type")

#: A self-supervised base model (``aam pretrain``): sample embeddings fit to UniFrac / Faith PD / taxonomy.
AAMPretrained = SemanticType("AAMPretrained", variant_of=AAMModel.field["type"])

#: A model predicting a numeric metadata column.
AAMRegressor = SemanticType("AAMRegressor", variant_of=AAMModel.field["type"])

#: A model predicting a categorical metadata column.
AAMClassifier = SemanticType("AAMClassifier", variant_of=AAMModel.field["type"])

#: Per-feature permutation importance of an AAM model with its interval, q-value, direction and each member's
#: figures (every column numeric). q2-sample-classifier's ``FeatureData[Importance]`` carries the blended
#: importance alone, since its heatmap ranks features by the sum of all columns.
AAMImportance = SemanticType("AAMImportance", variant_of=FeatureData.field["type"])
