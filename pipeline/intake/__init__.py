"""The real intake: COCO-style files with human labels, photos and videos without boxes, person detectors."""
