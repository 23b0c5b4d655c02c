"""One name table mechanism for every "choose by name" choice of the toolkit (losses, penalties, ...).

    LOSSES = Registry("adversarial loss", {"hinge": HINGE, ...})
    LOSSES.get("hinge")     # the entry
    LOSSES.get("hing")      # GanJaxError: unknown adversarial loss 'hing'; valid names: hinge, ...

Every table raises the same error (a `GanJaxError`, so the CLI reports any bad name as one line).
"""

from typing import Generic, Iterator, Mapping, TypeVar

from gan_jax.errors import GanJaxError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An immutable, ordered mapping name → entry whose lookups fail with "unknown {kind} 'name'; valid names: ..."."""

    def __init__(self, kind: str, entries: Mapping[str, T]):
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise GanJaxError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self._entries)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable name is not a name
            return False

    def names(self) -> tuple[str, ...]:
        """The valid names, in registration order."""
        return tuple(self._entries)

    def get(self, name: str) -> T:  # type: ignore[override]  # no default: an unknown name is an error
        """The entry called `name`; GanJaxError naming the valid names otherwise."""
        return self[name]
