"""BD-CSPN (Liu, Song and Qin, "Prototype Rectification for Few-Shot Learning", ECCV 2020), transductive.

Features are L2-normalised (the paper's cosine-similarity classifier). The queries are shifted by the mean
support feature minus the mean query feature (cross-class bias); each query is pseudo-labelled with its most
similar class mean and the prototypes become softmax(epsilon x cosine)-weighted sums of their support and
pseudo-labelled rows (intra-class bias; methods/transductive.rectify). A shifted query's scores are epsilon x
its cosine similarity to the rectified prototypes. epsilon = 10 as in the paper; `top` = Z, the pseudo-labelled
queries kept per class (0: all of them, as LaplacianShot's and easyfsl's implementations do).
"""

from __future__ import annotations

from torch.nn import functional as F

from methods.registry import register_method
from methods.transductive import TransductiveMethod, cosine, rectify


@register_method("bd-cspn")
class BDCSPN(TransductiveMethod):
    description = "BD-CSPN (transductive): prototypes rectified with shifted, pseudo-labelled query features; cosine"

    def __init__(self, epsilon: float = 10.0, top: int = 0):
        if float(epsilon) <= 0 or int(top) < 0:
            raise ValueError("epsilon must be positive and top a non-negative integer (0: every query)")
        self.epsilon, self.top = float(epsilon), int(top)

    def transform(self, features):
        return F.normalize(features, dim=-1)

    def episodes(self, support, support_y, query, n_way):
        protos, query = rectify(support, support_y, query, n_way, self.epsilon, self.top)
        return self.epsilon * cosine(query, protos)
