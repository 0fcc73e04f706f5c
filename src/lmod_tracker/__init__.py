"""lmod-tracker: every Lmod ``module load`` as a row in a SQL database, exactly once."""

from lmod_tracker.events import Chunk, FileKey, LoadEvent, Rejected
from lmod_tracker.parse import Parser

__version__ = "0.1.0"

__all__ = ["Chunk", "FileKey", "LoadEvent", "Parser", "Rejected", "__version__"]
