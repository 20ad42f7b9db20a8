"""The tasks, arrays in and arrays out: land cover (``landcover``) and change detection
(``changedetect``), with the tiling and probability smoothing they share."""
