"""The bulk import of the resident index, split by job.

``load`` (the transaction and the upserts: :func:`import_residents`), ``readers`` (CSV and JSON Lines
to COPY batches, problems by line), ``converters`` (one field or one row to COPY text), ``copy_rows``
(COPY payloads and their writer), ``statements`` (every SQL statement, in full), ``first_load``
(keys and indexes rebuilt once after a load into an empty index), ``report`` (what an import did).
"""

from dispatcher.preferences.importing.load import import_residents
from dispatcher.preferences.importing.report import ImportReport

__all__ = ["ImportReport", "import_residents"]
