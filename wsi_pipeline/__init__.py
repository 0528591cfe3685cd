"""wsi_pipeline: screening pipeline for cervical-cytology whole-slide images.

Research use only. The software is decision support for trained cytology staff; it is not a
medical device and its output is not a diagnosis.
"""

__version__ = "0.1.0"

# shown in every report, batch index and CLI help (one definition for export, pipeline and cli)
RESEARCH_NOTICE = "Research use only: decision support for trained cytology staff, not a diagnosis."
