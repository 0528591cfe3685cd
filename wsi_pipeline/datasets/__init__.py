"""Training data from real annotations: importers (QuPath GeoJSON, ASAP XML, COCO, labelled crops),
patch datasets cut from annotated slides, and composited sets of real crops on real backgrounds."""
