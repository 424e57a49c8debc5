"""Errors a user can act on. The CLI prints their message without a traceback."""


class GilbenchError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class MissingDependency(GilbenchError):
    def __init__(self, package: str, purpose: str, extra: str | None = None):
        how = f'pip install "gilbench[{extra}]"' if extra else f"pip install {package}"
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed. Install it with: {how}"
        )


def require(module: str, purpose: str, package: str | None = None, extra: str | None = None):
    """Import an optional module or raise a MissingDependency that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(package or module, purpose, extra) from e
