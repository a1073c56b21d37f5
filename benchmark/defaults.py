"""The run settings' defaults, as benchmark modules import them: common.settings holds them."""

from common.settings import DEFAULTS, MAX_SEEDS, SEED_MAX, Settings  # noqa: F401
