"""Few-shot methods. Importing this package registers the built-in ones."""

from methods import (
    base_classifier,
    baseline_pp,
    bd_cspn,
    finetune,
    knn,
    laplacianshot,
    linear_probe,
    maml,
    protonet,
    pt_map,
    sdft,
    simpleshot,
    tim,
)
from methods.base import BatchedMethod, Context, FeatureMethod, FewShotMethod  # noqa: F401
from methods.registry import create_method, method_names, register_method  # noqa: F401
