"""paint_ray: PAINT (patching open-vocabulary models by interpolating weights) as parallel sweeps."""
__version__ = "0.1.0"
