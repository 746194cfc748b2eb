"""Reading and writing dictionaries: dictopt's native folder format (SAELens layout), and
SAEs trained elsewhere (SAELens, dictionary_learning, sparsify, OpenAI sparse_autoencoder,
scikit-learn, ``.npz``). :func:`load` detects the format; every loader keeps the SAE's own
encoder and records its conventions and λ conversion in ``meta``. SAEs held in memory
(SAELens objects, dictopt SAE modules, scikit-learn estimators, state dicts) go through
:func:`as_dictionary` with the same conventions.
"""

from dictopt.io.dispatch import FORMATS, detect_format, load
from dictopt.io.native import load_dictionary, save_dictionary
from dictopt.io.objects import as_dictionary

__all__ = [
    "FORMATS",
    "as_dictionary",
    "detect_format",
    "export",
    "load",
    "load_dictionary",
    "save_dictionary",
]


def export(dictionary, folder, to: str):  # type: ignore[no-untyped-def]
    """Write ``dictionary`` to ``folder`` in another library's format.

    Parameters
    ----------
    dictionary:
        The dictionary, with the encoder the target format needs.
    folder:
        The output folder (written atomically).
    to:
        ``"saelens"``, ``"dictionary_learning"`` or ``"native"``.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    DictoptInputError
        For an unknown ``to`` (or an encoder the format cannot hold).
    """
    from dictopt.io.dictionary_learning import export_dictionary_learning
    from dictopt.io.saelens import export_saelens
    from dictopt.validation import DictoptInputError

    writers = {"saelens": export_saelens, "dictionary_learning": export_dictionary_learning,
               "native": save_dictionary}
    if to not in writers:
        raise DictoptInputError(f"--to: unknown {to!r}; known: {', '.join(writers)}")
    return writers[to](dictionary, folder)
