"""Neural style transfer: feature network, image optimisation, colour, image I/O."""
