"""Cell detectors (torchvision RetinaNet/FCOS) and their long-tail classification losses.

``losses`` has no dependency on any detection engine; ``detector``, ``checkpoint``, ``data``,
``training`` and ``evaluation`` build on torchvision.
"""
