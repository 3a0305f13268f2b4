"""User-facing errors: the CLI prints ``str(err)`` as one line and exits 2."""


class FastganError(Exception):
    """A problem with the user's input (config, data, checkpoint) that names its fix."""


class ConfigError(FastganError):
    pass


class DataError(FastganError):
    pass


class CheckpointError(FastganError):
    pass


class TrainingDiverged(FastganError):
    pass
