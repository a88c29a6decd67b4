"""The embedded open-vocabulary world: a seeded generator of captioned images and tasks drawn from it.

May import: nothing in paint_ray
"""
