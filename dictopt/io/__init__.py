"""Reading and writing dictionaries: dictopt's native folder format (SAELens layout)."""

from dictopt.io.native import load_dictionary, save_dictionary

__all__ = ["load_dictionary", "save_dictionary"]
