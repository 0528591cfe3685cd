"""On-disk artifacts that stages exchange: the zarr patch store and the detections table."""
