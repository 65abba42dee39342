"""darknet-supervisor: supervises darknet/YOLO training jobs."""

__version__ = "0.1.0"
