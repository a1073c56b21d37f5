"""The columns of every results table, in file order: one list per table. The live schemas
(benchmark/results.py, benchmark/fixedk.py, benchmark/mapping/craters.py) read them, and the schema history
(benchmark/migrations.py) derives every older header from them by the columns that each step added."""

from __future__ import annotations


def names(text: str) -> tuple[str, ...]:
    """Column names written as words, so that a header reads as a short paragraph rather than a name a line."""
    return tuple(text.split())


# What every table's key also holds: the digest of the backbone's weights (two checkpoints of one architecture
# never share rows), whether the method reads its query's features (methods.base.FewShotMethod.transductive),
# and whether it ran in a sandbox (`--isolate`, benchmark/sandbox.py: an isolated run never takes rows made in
# the harness's process for its own).
WEIGHTS_COLUMNS = names("weights transductive isolated")

# What else determines a row besides what was asked: the data identity, the method's version and settings, the
# backbone, the image size and the preprocessing, and the device (a GPU's numbers differ from a CPU's in the
# last bits: methods/devices.py).
CONDITIONS = names("source data method_version config backbone image_size preprocessing device")

EPISODE_COLUMNS = (
    names("""
    schema task source data method method_version config shots ways queries seed manifest episode classes
    accuracy macro_f1 class_accuracy n_query seconds backbone image_size preprocessing device git_commit
    versions timestamp
""")
    + WEIGHTS_COLUMNS
)

# device: where the networks ran; draw: random or Mars-Bench's K-shot list; capped: classes with fewer than K
# images
FIXED_K_COLUMNS = (
    names("""
    schema protocol task source data method method_version config shots seed n_train n_test accuracy
    weighted_f1 macro_f1 seconds backbone image_size preprocessing device git_commit versions timestamp draw
    capped
""")
    + WEIGHTS_COLUMNS
)

# A crater row holds what else determines it, as `bench run`'s rows do (provenance.method_conditions): the
# base task, its data identity, the CTX scene's identity (tiles and crater file), backbone, preprocessing,
# method version and config; and the git commit that made it (other code: refused unless --reuse-stale).
CRATER_COLUMNS = (
    names("""
    method shots seed smoothing strength precision recall f1 tp fp fn positives scored ambiguous
    predicted_crater_fraction strict_precision strict_recall strict_f1 method_seed map_seconds prepare_seconds
    window stride image_size device source task data scene backbone preprocessing method_version config
    git_commit
""")
    + WEIGHTS_COLUMNS
    + ("schema",)
)
