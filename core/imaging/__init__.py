"""Images as they came from the C-arm and the CT: ``images`` (``FluoroImage``, PNG/TIFF,
DICOM XA writing, the file sniffer), ``dicom_read`` (X-ray shots from DICOM), ``ct_series``
(a CT series to and from a ``volume.Volume``), ``shot_store`` (earlier shots kept as files,
not in memory).

May import: numpy, opencv, pydicom, ``core.formats``, ``core.geometry``. A new image
source format goes here; a device that delivers images goes to ``devices/``.
"""
