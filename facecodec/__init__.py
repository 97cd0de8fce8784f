"""facecodec: a talking-head video codec that sends one reference picture and then only
head pose and expression per frame, re-creating each frame at the receiver."""

__version__ = "0.1.0"
