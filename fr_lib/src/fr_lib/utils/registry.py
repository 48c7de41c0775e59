"""A name -> constructor registry, one per family (losses, models)."""

__all__ = ["Registry"]


class Registry:
    """Maps lower-case names to constructors.

    Names are matched case-insensitively, so ``get('ArcFace')`` and
    ``get('arcface')`` are the same entry. An unknown name raises
    :class:`ValueError` that lists every valid name.

    Parameters
    ----------
    kind : str
        What the registry holds ("loss", "model"), used in error messages.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name=None):
        """Decorator: register a class or factory under ``name``."""
        def wrap(obj):
            key = (name or obj.__name__).lower()
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} '{key}' is already registered "
                                 f"as {self._entries[key]!r}")
            self._entries[key] = obj
            return obj
        return wrap

    def add(self, name, obj):
        """Register ``obj`` under ``name`` (for objects defined elsewhere)."""
        return self.register(name)(obj)

    def lookup(self, name):
        """The constructor registered as ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        key = name.lower()
        if key not in self._entries:
            valid = ", ".join(self.names()) or "(none registered)"
            raise ValueError(f"unknown {self.kind} '{name}'. Valid names: {valid}")
        return self._entries[key]

    def create(self, name, **kwargs):
        """Build the entry ``name`` with keyword arguments."""
        return self.lookup(name)(**kwargs)

    def names(self):
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._entries

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        """Iterate over the registered names, sorted (like :meth:`names`)."""
        return iter(self.names())
