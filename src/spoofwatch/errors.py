"""The exception tree. Messages say what was expected and what was found."""


class SpoofwatchError(Exception):
    """Base class of every error spoofwatch raises on purpose."""


class AudioError(SpoofwatchError):
    """Audio that cannot be decoded or does not meet the expected format."""


class ModelError(SpoofwatchError):
    """An encoder, head or detector artifact that cannot be built or loaded."""


class ArtifactMismatchError(ModelError):
    """A detector artifact whose encoder or window settings differ from what is asked."""


class WeightsIntegrityError(ModelError):
    """Pretrained weights whose hash differs from the pinned one."""


class ConfigError(SpoofwatchError):
    """A configuration value that is missing, of the wrong type or out of range."""


class ProtocolError(SpoofwatchError):
    """A malformed or unexpected message from a streaming client."""


class LimitExceededError(SpoofwatchError):
    """Input beyond a configured size, rate or count limit."""


class DataError(SpoofwatchError):
    """A manifest, protocol file or dataset that cannot be read as expected."""
