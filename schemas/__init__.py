"""Data contracts shared by every part of SpineTrack: keypoints, COCO, render contract, manifests."""
