"""Project settings: hooks and where configuration comes from."""

from kedro.config import OmegaConfigLoader

from landuse_kedro.hooks import SparkHooks

HOOKS = (SparkHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "globals": "soft", "spark": "soft"},
    "config_patterns": {
        "spark": ["spark*", "spark*/**"],
        "globals": ["globals*", "globals*/**"],
    },
}
