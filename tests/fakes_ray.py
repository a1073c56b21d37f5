"""A plugin method for the Ray executor's tests: protonet whose first batch on a Ray worker kills that worker's
process (once: a marker file says it happened), as a machine lost mid-run would."""
from __future__ import annotations

import os

from methods.protonet import ProtoNet
from methods.registry import register_method


@register_method("die-once")
class DieOnce(ProtoNet):
    description = "test only: protonet that kills its Ray worker process on its first batch"

    def __init__(self, marker: str = ""):
        super().__init__()
        self.marker = marker
        self.driver = os.getpid()  # never kill the process that runs the harness

    def predict_batch(self, support_idx, support_y, query_idx, n_way):
        if self.marker and os.getpid() != self.driver and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)
        return super().predict_batch(support_idx, support_y, query_idx, n_way)
